"""The Grafana dashboard: the committed JSON is what ``deploy/grafana/make_dashboard.py`` generates,
and every query names metrics the server exports, with labels they carry. (The queries run
against a real Prometheus in test_prometheus_e2e.py.)"""

from __future__ import annotations

import json
import re

from server.metrics import Metrics

from .helpers import DEPLOY, load_script

#: labels a scrape adds to every series (the ServiceMonitor / scrape config)
TARGET_LABELS = {"namespace", "model", "pod", "instance", "job", "le"}


def queries() -> list[str]:
    board = json.loads((DEPLOY / "grafana" / "guard-dashboard.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def exported() -> dict[str, set[str]]:
    """Series names of the server's metrics (``server.metrics.Metrics``), with their labels."""
    from prometheus_client.metrics import MetricWrapperBase

    out: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                for s in suffixes.get(family.type, ("",)):
                    out[family.name + s] = set(metric._labelnames)
    return out


def test_committed_dashboard_is_generated() -> None:
    make = load_script("grafana/make_dashboard.py")
    assert (DEPLOY / "grafana" / "guard-dashboard.json").read_text() == make.rendered(), (
        "run python deploy/grafana/make_dashboard.py"
    )


def test_every_query_names_exported_metrics_and_labels() -> None:
    series = exported()
    seen = set()
    for expr in queries():
        names = re.findall(r"\b(guard_[a-z_]+)", expr)
        assert names, expr
        for name in names:
            assert name in series, f"{name} is not exported (query: {expr})"
            seen.add(name)
        used = set(re.findall(r"by \(([^)]*)\)", expr))
        labels = {label.strip() for group in used for label in group.split(",")}
        labels |= set(re.findall(r"(\w+)=~?\"", expr))
        allowed = TARGET_LABELS.union(*(series[n] for n in names))
        assert labels <= allowed, f"{labels - allowed} not on {names} (query: {expr})"
    # what the issue asks the dashboard to show
    for name in (
        "guard_abstentions_total",
        "guard_flags_total",
        "guard_ambiguity_bucket",
        "guard_hull_distance_bucket",
        "guard_queue_seconds_bucket",
        "guard_model_seconds_bucket",
        "guard_geometry_seconds_bucket",
        "guard_batch_size_bucket",
    ):
        assert name in seen, name


def test_panels_are_laid_out() -> None:
    board = json.loads((DEPLOY / "grafana" / "guard-dashboard.json").read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    kinds = {p["title"]: p["type"] for p in board["panels"]}
    assert kinds["Ambiguity (d_min - hull distance)"] == "heatmap"
    assert kinds["Distance to the training hull"] == "heatmap"
    cells = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]}
    assert len(cells) == len(ids)  # no two panels on top of each other
