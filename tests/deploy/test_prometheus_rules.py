"""The shipped Prometheus rules: generated from ``deploy/prometheus/make_rules.py`` (the committed
files are exactly its output), valid for Prometheus (``promtool check rules``), and doing what they
should on synthetic series (``promtool test rules`` runs ``guard-rules.test.yaml``, written by
hand). Every metric a rule reads is one the server exports."""

from __future__ import annotations

import re
import subprocess

import yaml

from server.metrics import Metrics
from tests.tools import require_command

from .helpers import DEPLOY, load_script

PROMETHEUS_DIR = DEPLOY / "prometheus"
HINT = "apt-get install prometheus (it has promtool), or `make apt`"


def test_committed_rule_files_are_what_the_generator_writes() -> None:
    make_rules = load_script("prometheus/make_rules.py")
    for path, text in make_rules.rendered().items():
        assert path.read_text() == text, f"{path}: run python deploy/prometheus/make_rules.py"


def test_prometheus_rule_manifest_carries_the_same_groups() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "guard-rules.yaml").read_text())
    manifest = yaml.safe_load((DEPLOY / "k8s/base/prometheusrule.yaml").read_text())
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == rules


def test_fast_variant_differs_only_in_windows() -> None:
    """The end-to-end test's rules are the shipped ones with other windows and durations."""
    make_rules = load_script("prometheus/make_rules.py")
    shipped = make_rules.rule_groups(make_rules.SHIPPED)
    fast = make_rules.rule_groups(make_rules.FAST)
    duration = re.compile(r"\[\d+[smhd]\]|\b\d+[smhd]\b")
    for a, b in zip(shipped["groups"][0]["rules"], fast["groups"][0]["rules"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "expr":
                # the same expression up to windows and the minimum-traffic count
                norm = re.compile(r">= \d+$")
                assert norm.sub("", duration.sub("W", a[key])) == norm.sub(
                    "", duration.sub("W", b[key])
                )
            elif key == "for":
                assert duration.fullmatch(a[key]) and duration.fullmatch(b[key])
            elif key == "annotations":
                assert {k: duration.sub("W", v) for k, v in a[key].items()} == {
                    k: duration.sub("W", v) for k, v in b[key].items()
                }
            else:
                assert a[key] == b[key]


def test_every_metric_the_rules_read_is_exported() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "guard-rules.yaml").read_text())["groups"][0]["rules"]
    recorded = {r["record"] for r in rules if "record" in r}
    exported = exported_series()
    for rule in rules:
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["expr"]):
            if name.startswith("guard_"):
                assert name in exported, f"{name} (in {rule.get('record') or rule['alert']})"
            elif ":" in name:
                assert name in recorded, name


def exported_series() -> set[str]:
    """Every series name the server's registry exposes (histograms: _bucket, _sum, _count)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


def test_promtool_check_rules() -> None:
    promtool = require_command("promtool", HINT)
    out = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS_DIR / "guard-rules.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_unit_tests() -> None:
    promtool = require_command("promtool", HINT)
    out = subprocess.run(
        [promtool, "test", "rules", "guard-rules.test.yaml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
