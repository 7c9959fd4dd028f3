"""Guard's Grafana dashboard, generated from code: ``deploy/grafana/guard-dashboard.json``.

    python deploy/grafana/make_dashboard.py            # write it
    python deploy/grafana/make_dashboard.py --check    # exit 1 if the committed file differs

Import it in Grafana (Dashboards > New > Import) and pick the Prometheus data source. Every panel
queries the server's own metrics (no recording rule needed), filtered by the ``namespace`` and
``model`` variables (the labels the ServiceMonitor / scrape config put on Guard's targets):
abstain, out-of-distribution and ambiguity rates, abstentions by reason, flags by kind, the
ambiguity / hull-distance / margin histograms as heatmaps, latency by stage (queue, model,
geometry, upstream) and by RPC, batch size, requests in flight, request outcomes, upstream errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "guard-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'namespace=~"$namespace", model=~"$model"'
RATE = "$__rate_interval"


def _ratio(counter: str, extra: str = "", by: str = "model") -> str:
    num = f"sum by ({by}) (rate({counter}{{{SEL}{extra}}}[{RATE}]))"
    den = f"sum by (model) (rate(guard_images_total{{{SEL}}}[{RATE}]))"
    on = "" if by == "model" else " / on (model) group_left"
    return f"{num}{on or ' /'} {den}"


def _target(expr: str, legend: str, ref: str, fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "format": fmt,
        "range": True,
    }


def _timeseries(
    title: str, targets: list[dict[str, Any]], unit: str, description: str, stack: bool = False
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
    }


def _heatmap(title: str, metric: str, unit: str, description: str) -> dict[str, Any]:
    expr = f"sum by (le) (increase({metric}_bucket{{{SEL}}}[{RATE}]))"
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [_target(expr, "{{le}}", "A", fmt="heatmap")],
        "options": {
            "calculate": False,
            "yAxis": {"unit": unit},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "tooltip": {"mode": "single", "yHistogram": True},
        },
        "fieldConfig": {"defaults": {}, "overrides": []},
    }


def _quantiles(metric: str, legend: str, by: str = "model") -> list[dict[str, Any]]:
    return [
        _target(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))",
            f"{legend} p{round(float(q) * 100)}",
            chr(ord("A") + i),
        )
        for i, q in enumerate(("0.5", "0.99"))
    ]


def panels() -> list[dict[str, Any]]:
    """The panels, top to bottom, two to a row."""
    latency = []
    for i, stage in enumerate(("queue", "model", "geometry", "upstream")):
        for t in _quantiles(f"guard_{stage}_seconds", f"{{{{model}}}} {stage}"):
            t["refId"] = f"{t['refId']}{i}"
            latency.append(t)
    rows: list[dict[str, Any]] = [
        _timeseries(
            "Abstain, out-of-distribution and ambiguity rates",
            [
                _target(_ratio("guard_abstentions_total"), "{{model}} abstain", "A"),
                _target(_ratio("guard_flags_total", ', flag="ood"'), "{{model}} ood", "B"),
                _target(
                    _ratio("guard_flags_total", ', flag="ambiguous"'), "{{model}} ambiguous", "C"
                ),
            ],
            "percentunit",
            "Fraction of the images the guard abstained on, flagged out of distribution, "
            "flagged ambiguous. On in-distribution traffic the abstain rate sits at the "
            "calibrated target (5% by default); a sustained rise is drift "
            "(alerts GuardAbstainRateHigh / GuardAbstainRateElevated).",
        ),
        _timeseries(
            "Abstentions by reason",
            [
                _target(
                    _ratio("guard_abstentions_total", by="model, reason"),
                    "{{model}} {{reason}}",
                    "A",
                )
            ],
            "percentunit",
            "Abstentions split by what caused them (out of distribution first; the reasons add "
            "up to the abstain rate).",
            stack=True,
        ),
        _timeseries(
            "Flags by kind",
            [_target(_ratio("guard_flags_total", by="model, flag"), "{{model}} {{flag}}", "A")],
            "percentunit",
            "Fraction of images with each flag raised (adversarial, ood, ambiguous; an image "
            "may carry several).",
        ),
        _timeseries(
            "Images and requests",
            [
                _target(
                    f"sum by (model) (rate(guard_images_total{{{SEL}}}[{RATE}]))",
                    "{{model}} images/s",
                    "A",
                ),
                _target(
                    f"sum by (rpc, outcome) (rate(guard_requests_total{{{SEL}}}[{RATE}]))",
                    "{{rpc}} {{outcome}}",
                    "B",
                ),
            ],
            "reqps",
            "Images classified per second, and RPCs per second by method and outcome "
            "(status code).",
        ),
        _heatmap(
            "Ambiguity (d_min - hull distance)",
            "guard_ambiguity",
            "none",
            "Per image: distance to the nearest decision boundary minus the certified distance "
            "to the training hull. Negative: closer to a boundary than to the training data.",
        ),
        _heatmap(
            "Distance to the training hull",
            "guard_hull_distance",
            "none",
            "Certified distance (upper bound) of each image's features to the convex hull of "
            "the training features: mass moving up is drift.",
        ),
        _heatmap(
            "Margin to the nearest decision boundary",
            "guard_margin_min",
            "none",
            "Exact distance of each image's features to the nearest decision boundary.",
        ),
        _timeseries(
            "Latency by stage (per batch; queue per request)",
            latency,
            "s",
            "Median and 99th percentile of the time a request waits for its batch (queue), "
            "the model run, the geometry, and the upstream round trip in proxy mode "
            "(alert GuardGeometryLatencyHigh).",
        ),
        _timeseries(
            "Request latency by RPC",
            _quantiles("guard_request_duration_seconds", "{{rpc}}", by="rpc"),
            "s",
            "Time an RPC spends in the server, from decoding to response.",
        ),
        _heatmap(
            "Batch size",
            "guard_batch_size",
            "none",
            "Images per merged batch (dynamic batching).",
        ),
        _timeseries(
            "Requests in flight",
            [
                _target(
                    f"sum by (pod) (guard_in_flight_requests{{{SEL}}})",
                    "{{pod}}",
                    "A",
                )
            ],
            "short",
            "Requests waiting for a batch or running, per pod: the autoscaler's metric "
            "(target 8 per pod in deploy/k8s/base/hpa.yaml).",
        ),
        _timeseries(
            "Upstream errors (proxy mode)",
            [
                _target(
                    f"sum by (model, code) (rate(guard_upstream_errors_total{{{SEL}}}[{RATE}]))",
                    "{{model}} {{code}}",
                    "A",
                )
            ],
            "ops",
            "Batches per second that failed because of the model server, by gRPC status "
            "(alert GuardUpstreamErrors).",
        ),
    ]
    for i, panel in enumerate(rows):
        panel["id"] = i + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    return rows


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "guard-overview",
        "title": "Guard",
        "description": "Guard: decisions, feature-space geometry and latency "
        "(generated by deploy/grafana/make_dashboard.py)",
        "tags": ["guard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                _variable("namespace", "label_values(guard_images_total, namespace)"),
                _variable(
                    "model", 'label_values(guard_images_total{namespace=~"$namespace"}, model)'
                ),
            ]
        },
        "panels": panels(),
    }


def rendered() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the committed file differs")
    args = p.parse_args(argv)
    text = rendered()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is not what make_dashboard.py generates: run it", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
