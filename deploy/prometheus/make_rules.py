"""Guard's Prometheus recording and alerting rules, generated from one definition.

Writes ``deploy/prometheus/guard-rules.yaml`` (a Prometheus rule file: ``rule_files:``) and
``deploy/k8s/base/prometheusrule.yaml`` (the same groups as a prometheus-operator
``PrometheusRule``)::

    python deploy/prometheus/make_rules.py            # write both
    python deploy/prometheus/make_rules.py --check    # exit 1 if a committed file differs
    python deploy/prometheus/make_rules.py --target 0.01 --out my-rules.yaml   # another target

Every rate is aggregated ``by (namespace, model)``: one Guard deployment serves one model, and
its scrape target carries the ``model`` label (the ServiceMonitor copies the pod's ``model``
label; a plain scrape config sets it as a target label). Recorded series follow the Prometheus
naming convention ``level:metric:operations``.

The end-to-end test (tests/deploy/test_prometheus_e2e.py) runs :func:`rule_groups` with
:data:`FAST` windows (seconds instead of minutes and hours) against a real Prometheus; the
shipped file uses :data:`SHIPPED`. The two differ only in the windows and ``for`` durations (and
the minimum traffic of the abstention alerts): the record names keep the shipped windows' names.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "guard-rules.yaml"
PROMETHEUS_RULE_FILE = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"

BY = "namespace, model"
#: The abstention rate a calibrated guard shows on in-distribution traffic: ``guard fit``
#: calibrates the out-of-distribution threshold for a 5% false-abstain rate by default.
DEFAULT_TARGET = 0.05
#: Burn-rate factors over the target (multi-window, multi-burn-rate alerts, as in Google's SRE
#: workbook, ch. 5): page when 1 h and 5 m both run at 3x the target, open a ticket when 6 h and
#: 30 m both run at 1.5x. (The workbook's 14.4x / 6x assume a 0.1% budget; 14.4 x 5% > 100%.)
PAGE_FACTOR = 3.0
TICKET_FACTOR = 1.5
QUANTILES = ("0.5", "0.9", "0.99")
LATENCIES = ("queue", "model", "geometry", "upstream")


@dataclass(frozen=True)
class Windows:
    """Range windows and ``for`` durations; the names are the shipped values."""

    w5m: str = "5m"
    w30m: str = "30m"
    w1h: str = "1h"
    w6h: str = "6h"
    page_for: str = "2m"
    ticket_for: str = "15m"
    latency_for: str = "10m"
    upstream_for: str = "5m"
    #: Fewest images in the long window before an abstention alert may fire (no page on a
    #: handful of requests).
    min_images: int = 100

    def window(self, name: str) -> str:
        return str(getattr(self, "w" + name))


SHIPPED = Windows()
#: For tests: every window in seconds (scrape and evaluation every second).
FAST = Windows(
    w5m="4s",
    w30m="8s",
    w1h="12s",
    w6h="24s",
    page_for="2s",
    ticket_for="2s",
    latency_for="2s",
    upstream_for="2s",
    min_images=20,
)


def _ratio_or_zero(counter: str, window: str, images: str) -> str:
    """``counter``'s rate over the images' rate, 0 (not absent) before its first increment."""
    return (
        f"(\n  sum by ({BY}) (rate({counter}[{window}]))\n"
        f"  or on ({BY}) 0 * {images}\n)\n/ {images}"
    )


def recording_rules(w: Windows) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for name in ("5m", "30m", "1h", "6h"):
        win = w.window(name)
        images = f"namespace_model:guard_images:rate{name}"
        rules.append({"record": images, "expr": f"sum by ({BY}) (rate(guard_images_total[{win}]))"})
        rules.append(
            {
                "record": f"namespace_model:guard_abstain:ratio_rate{name}",
                "expr": _ratio_or_zero("guard_abstentions_total", win, images),
            }
        )
    win = w.window("5m")
    images = "namespace_model:guard_images:rate5m"
    for flag in ("ood", "ambiguous", "adversarial"):
        rules.append(
            {
                "record": f"namespace_model:guard_{flag}:ratio_rate5m",
                "expr": _ratio_or_zero(f'guard_flags_total{{flag="{flag}"}}', win, images),
            }
        )
    rules.append(
        {
            "record": "namespace_model_flag:guard_flags:ratio_rate5m",
            "expr": f"sum by ({BY}, flag) (rate(guard_flags_total[{win}]))\n"
            f"/ on ({BY}) group_left {images}",
        }
    )
    rules.append(
        {
            "record": "namespace_model_reason:guard_abstentions:ratio_rate5m",
            "expr": f"sum by ({BY}, reason) (rate(guard_abstentions_total[{win}]))\n"
            f"/ on ({BY}) group_left {images}",
        }
    )
    for stage in LATENCIES:
        for q in QUANTILES:
            rules.append(
                {
                    "record": f"namespace_model:guard_{stage}_seconds:quantile_rate5m",
                    "expr": f"histogram_quantile({q}, sum by ({BY}, le) "
                    f"(rate(guard_{stage}_seconds_bucket[{win}])))",
                    "labels": {"quantile": q},
                }
            )
    for q in QUANTILES:
        rules.append(
            {
                "record": "namespace_model_rpc:guard_request_duration_seconds:quantile_rate5m",
                "expr": f"histogram_quantile({q}, sum by ({BY}, rpc, le) "
                f"(rate(guard_request_duration_seconds_bucket[{win}])))",
                "labels": {"quantile": q},
            }
        )
    rules.append(
        {
            "record": "namespace_model:guard_batch_size:mean_rate5m",
            "expr": f"sum by ({BY}) (rate(guard_batch_size_sum[{win}]))\n"
            f"/ sum by ({BY}) (rate(guard_batch_size_count[{win}]))",
        }
    )
    rules.append(
        {
            "record": "namespace_model:guard_upstream_errors:ratio_rate5m",
            "expr": f"sum by ({BY}) (rate(guard_upstream_errors_total[{win}]))\n"
            f"/ (\n  sum by ({BY}) (rate(guard_upstream_seconds_count[{win}]))\n"
            f"  or on ({BY}) 0 * sum by ({BY}) (rate(guard_upstream_errors_total[{win}]))\n)",
        }
    )
    rules.append(
        {
            "record": "namespace_model:guard_in_flight_requests:sum",
            "expr": f"sum by ({BY}) (guard_in_flight_requests)",
        }
    )
    return rules


def _abstain_alert(
    name: str,
    severity: str,
    factor: float,
    windows: tuple[str, str],
    for_: str,
    w: Windows,
    target: float,
) -> dict[str, Any]:
    """Fires when the abstain ratio is above ``factor`` x ``target`` over both windows."""
    long, short = windows
    threshold = f"({factor:g} * {target:g})"
    return {
        "alert": name,
        "expr": f"namespace_model:guard_abstain:ratio_rate{long} > {threshold}\n"
        f"and namespace_model:guard_abstain:ratio_rate{short} > {threshold}\n"
        f"and sum by ({BY}) (increase(guard_images_total[{w.window(long)}])) >= {w.min_images}",
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": f"Guard abstains on {{{{ $value | humanizePercentage }}}} of the images "
            f"of {{{{ $labels.model }}}} ({factor:g}x its calibrated rate)",
            "description": (
                f"Over both {long} and {short}, model {{{{ $labels.model }}}} in "
                f"{{{{ $labels.namespace }}}} abstained on more than {factor:g} x "
                f"{target:.2%} of its images (the rate its out-of-distribution threshold "
                "was calibrated for). The traffic has drifted away from the training data, or "
                "the model in front of the guard changed: look at "
                "namespace_model_reason:guard_abstentions:ratio_rate5m (ood or ambiguous) and "
                "the guard_hull_distance histogram."
            ),
        },
    }


def alerting_rules(w: Windows, target: float, geometry_p99_s: float) -> list[dict[str, Any]]:
    return [
        _abstain_alert(
            "GuardAbstainRateHigh", "page", PAGE_FACTOR, ("1h", "5m"), w.page_for, w, target
        ),
        _abstain_alert(
            "GuardAbstainRateElevated",
            "ticket",
            TICKET_FACTOR,
            ("6h", "30m"),
            w.ticket_for,
            w,
            target,
        ),
        {
            "alert": "GuardGeometryLatencyHigh",
            "expr": 'namespace_model:guard_geometry_seconds:quantile_rate5m{quantile="0.99"}'
            f" > {geometry_p99_s:g}",
            "for": w.latency_for,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Guard's geometry p99 is {{ $value | humanizeDuration }} per batch "
                "for {{ $labels.model }}",
                "description": (
                    f"The 99th percentile of the geometry stage (margins, certified hull "
                    f"distance, union of regions) per merged batch has been above "
                    f"{geometry_p99_s:g} s. Scale out (the HorizontalPodAutoscaler), lower "
                    "GUARD_MAX_BATCH_SIZE, or give the pods more CPU."
                ),
            },
        },
        {
            "alert": "GuardUpstreamErrors",
            "expr": "namespace_model:guard_upstream_errors:ratio_rate5m > 0.05",
            "for": w.upstream_for,
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "{{ $value | humanizePercentage }} of the batches {{ $labels.model }} "
                "forwards to its model server fail",
                "description": (
                    "Guard in proxy mode (--upstream) gets errors from the model server: see "
                    "guard_upstream_errors_total by code (UNAVAILABLE: the upstream is down; "
                    "FAILED_PRECONDITION: it serves another model than the artifact's)."
                ),
            },
        },
    ]


def rule_groups(
    w: Windows = SHIPPED, target: float = DEFAULT_TARGET, geometry_p99_s: float = 1.0
) -> dict[str, Any]:
    """The rule file's content: one group, the recording rules first, then the alerts.

    One group, because a group's rules run in order at one timestamp: the alerts read the series
    recorded in the same evaluation (across groups they would read the previous one's, an
    evaluation interval behind, in an order that varies)."""
    if not 0.0 < target < 1.0 / PAGE_FACTOR:
        raise ValueError(f"target must lie in (0, {1.0 / PAGE_FACTOR:.3f}), got {target}")
    rules = recording_rules(w) + alerting_rules(w, target, geometry_p99_s)
    return {"groups": [{"name": "guard", "rules": rules}]}


def prometheus_rule(groups: dict[str, Any]) -> dict[str, Any]:
    """The same groups as a prometheus-operator ``PrometheusRule`` (monitoring.coreos.com/v1)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "guard",
            "labels": {"app.kubernetes.io/name": "guard", "app.kubernetes.io/part-of": "guard"},
        },
        "spec": groups,
    }


class _Dumper(yaml.SafeDumper):
    """Block style, sequences indented under their key (yamllint's default), ``|`` for
    multi-line strings (the PromQL expressions)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any], header: str) -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return header + "---\n" + body


HEADER = (
    "# Generated by deploy/prometheus/make_rules.py (edit that, then run it); checked by\n"
    "# tests/deploy/test_prometheus_rules.py. {what}\n"
)


def rendered(target: float = DEFAULT_TARGET) -> dict[Path, str]:
    """The committed files' content."""
    groups = rule_groups(SHIPPED, target)
    return {
        RULES_FILE: dump(groups, HEADER.format(what="A Prometheus rule file (rule_files:).")),
        PROMETHEUS_RULE_FILE: dump(
            prometheus_rule(groups),
            HEADER.format(what="The same rules for the prometheus-operator."),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    p.add_argument("--target", type=float, default=DEFAULT_TARGET, help="calibrated abstain rate")
    p.add_argument("--out", type=Path, help="write only the rule file, here")
    args = p.parse_args(argv)
    files = rendered(args.target)
    if args.out is not None:
        args.out.write_text(files[RULES_FILE])
        print(f"wrote {args.out}")
        return 0
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is not what make_rules.py generates: run it", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
