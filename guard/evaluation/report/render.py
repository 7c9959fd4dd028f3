"""Markdown of a report from the numbers that
:func:`guard.evaluation.report.build.build_report` computed."""

from __future__ import annotations

import math
import re

from ..ood import COMBINED, LABELS
from ..ood import report as ood_section


def _pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def render(
    doc: dict,
    methods: list[str],
    ood_sets: list[str],
    shift_text: str,
    includes: list[tuple[str, str]],
) -> str:
    names = doc["class_names"]
    t = doc["facts"]["test"]
    parts = [
        f"# Guard report: {doc['data']}",
        "",
        f"_Written by `{doc['command'] or 'guard report'}` in {doc['seconds']:.0f} s "
        f"(guard {doc['environment']['guard']}, Python {doc['environment']['python']}, "
        f"{doc['environment']['date']}). Every number below was measured in that run "
        f"unless a section says it is included from another command._",
        "",
        f"Model: {doc['n_classes']} classes, {doc['n_features']} features in the last "
        f"hidden layer; the guard holds {doc['n_train']:,} training features "
        f"({doc['n_calib']:,} more inputs of the training data were held out for "
        f"calibration). Test set: {t['n']:,} labelled images, model accuracy "
        f"{_pct(t['accuracy'])}.",
        "",
        "## Headline",
        "",
    ]
    parts += _headline(doc, ood_sets)
    parts += [
        "",
        "## 1. Where inputs lie in feature space (paper section 7.2, Fig. 10)",
        "",
        "Distances are in feature space. *Outside the hull* counts inputs whose certified "
        "lower bound is > 0; *hull closer* counts inputs whose distance to the training "
        "hull is below the distance to the nearest decision boundary (the paper's "
        "ambiguity indicator is positive); *in union* counts inputs inside at least one "
        "training point's ball of guaranteed classification. The last three columns are "
        "the deployed guard's decisions at its calibrated thresholds.",
        "",
        "| set | n | outside hull | hull closer | in union | median d_min | median d_hull "
        "| abstain | flagged adversarial | ambiguous (d_min < d_hull) |",
        "|---" * 10 + "|",
    ]
    for name, f in doc["facts"].items():
        d = doc["decisions"][name]
        parts.append(
            f"| {name} | {f['n']:,} | {_pct(f['outside_hull'])} | "
            f"{_pct(f['hull_closer'])} | {_pct(f['in_union'])} | "
            f"{f['median_d_min']:.3f} | {f['median_d_hull']:.3f} | "
            f"{_pct(d['abstain'])} | {_pct(d['adversarial'])} | {_pct(d['ambiguous'])} |"
        )
    figs = doc["figures"]
    parts += [
        "",
        f"![distances]({figs['distances']})",
        "",
        "Test images in the (d_hull, d_min) plane: below the diagonal the nearest boundary "
        "is closer than the training hull (ambiguous).",
        "",
        f"![plane]({figs['plane']})",
        "",
        "## 2. Ambiguity (paper eq. 26, Fig. 13 and 15)",
        "",
        f"Test images with d_min < d_hull: {_pct(t['share_ambiguous'])}; model accuracy on "
        f"them {_pct(t.get('accuracy_ambiguous'))} vs {_pct(t.get('accuracy_unambiguous'))} "
        f"on the rest.",
        "",
        f"![ambiguity]({figs['ambiguity']})",
        "",
    ]
    left_out = doc.get("figures_left_out", {})
    if "extremes" in figs:
        parts += [
            "Most ambiguous test images (top row: smallest d_min − d_hull) and least "
            "ambiguous (bottom row); titles: true → predicted class.",
            "",
            f"![extremes]({figs['extremes']})",
            "",
        ]
    elif "extremes" in left_out:
        parts += [
            "_The figure of the most and least ambiguous test images (paper Fig. 13) is left "
            f"out: {left_out['extremes']}._",
            "",
        ]
    parts += _table1(doc["table1"], names)
    if "support" in doc:
        parts += _support(doc["support"], figs, left_out)
    if ood_sets and doc["ood"]:
        parts += [
            "",
            "## 5. Out-of-distribution detection: the guard vs its peers",
            "",
            "All methods score the same penultimate features and are fitted on the "
            "artifact's training features only; thresholds come from held-out training "
            "images (split conformal).",
            "",
        ]
        heading = f"### Far OOD: ID = {t['n']:,} test images; OOD = " + ", ".join(
            f"{s} {doc['facts'][s]['n']:,}" for s in ood_sets
        )
        parts.append(ood_section(doc["ood"], methods, ood_sets, heading, doc["rate"], t["n"]))
        if shift_text:
            parts.append(shift_text)
    if includes:
        parts += ["", "## 6. Included from other evaluations", ""]
        for path, text in includes:
            parts += [
                f"_Included verbatim from `{path}` (headings demoted)._",
                "",
                re.sub(r"^(#+)", r"##\1", text.strip(), flags=re.M),
                "",
            ]
    return "\n".join(parts).rstrip() + "\n"


def _headline(doc: dict, ood_sets: list[str]) -> list[str]:
    t = doc["facts"]["test"]
    lines = [
        f"- {_pct(t['outside_hull'])} of test images lie (certified) outside the convex hull "
        f"of the training features; for {_pct(t['hull_closer'])} the hull is closer than "
        f"the nearest decision boundary (median {t['median_d_hull']:.3f} vs "
        f"{t['median_d_min']:.3f}); {_pct(t['in_union'])} are inside the union of learned "
        f"regions.",
        f"- Ambiguous test images (d_min < d_hull, {_pct(t['share_ambiguous'])}) are "
        f"classified correctly {_pct(t.get('accuracy_ambiguous'))} of the time vs "
        f"{_pct(t.get('accuracy_unambiguous'))} for the rest.",
    ]
    sup = doc.get("support", {})
    if "pixel" in sup:
        lines.append(
            f"- Hull support with the query's label (convex weight): "
            f"{_pct(sup['feature']['weighted'])} in feature space vs "
            f"{_pct(sup['pixel']['weighted'])} in pixel space ({sup['n_pixel']} test "
            f"images)."
        )
    res = doc["ood"]
    if COMBINED in res:
        peers = [m for m in res if m in LABELS and m != COMBINED]
        cells = []
        for s in ood_sets:
            best = max(peers, key=lambda m: res[m][s]["auroc"])
            cells.append(
                f"{s} {res[COMBINED][s]['auroc']:.3f} (best peer {LABELS[best]} "
                f"{res[best][s]['auroc']:.3f})"
            )
        lines.append("- OOD AUROC of the guard's combined score: " + "; ".join(cells) + ".")
        lo, hi = res[COMBINED]["_false_abstain_ci"]
        lines.append(
            f"- False-abstain rate on test images: "
            f"{_pct(res[COMBINED]['_false_abstain'])} (95% CI {_pct(lo)}–{_pct(hi)}) "
            f"for a target of {_pct(doc['rate'])}."
        )
    return lines


def _table1(r: dict, names: list[str]) -> list[str]:
    lines = [
        f"## 3. Distance to every decision boundary of test image #{r['index']} (paper Table 1)",
        "",
        f"Predicted class: {names[r['pred']]}. Exact margin = distance in feature space to "
        f"the nearest point classified as the other class (a convex QP); closed form = "
        f"distance to the pair's hyperplane (a lower bound, exact when its foot point is "
        f"feasible). Distance to the training hull: {r['hull_upper']:.4f} (certified "
        f"≥ {r['hull_lower']:.4f}). Lipschitz constant of the last layer (σ_max(W)): "
        f"{r['lipschitz']:.3f}. Training features inside the ball B(x) of radius "
        f"d_min = {r['d_min']:.4f}: {r['train_in_ball']:,}.",
        "",
        "| class | exact margin | closed-form lower bound |",
        "|---|---|---|",
    ]
    for j, name in enumerate(names):
        if j == r["pred"]:
            continue
        m, c = r["margins"][j], r["closed_form"][j]
        mark = " **(nearest)**" if j == r["nearest_class"] else ""
        lines.append(f"| {name}{mark} | {m:.4f} | {c:.4f} |")
    return lines + [""]


def _support(sup: dict, figs: dict, left_out: dict) -> list[str]:
    lines = [
        "## 4. What supports the hull projection: feature vs pixel space (paper Fig. 6)",
        "",
        "Share of the support of each test image's projection onto the training hull that "
        "has the image's own label: weighted by the convex weights of the reported support "
        "points (top 8), and among the 4 largest weights.",
        "",
        "| space | test images | same label (weighted) | same label (top 4) |",
        "|---|---|---|---|",
        f"| feature | all | {_pct(sup['feature_all']['weighted'])} | "
        f"{_pct(sup['feature_all']['top4'])} |",
    ]
    if "pixel" in sup:
        n = sup["n_pixel"]
        lines += [
            f"| feature | first {n} | {_pct(sup['feature']['weighted'])} | "
            f"{_pct(sup['feature']['top4'])} |",
            f"| pixel | first {n} | {_pct(sup['pixel']['weighted'])} | "
            f"{_pct(sup['pixel']['top4'])} |",
            "",
            f"In pixel space {_pct(sup['pixel_outside_hull'])} of those test images lie "
            f"(certified) outside the hull of the training images (median distance "
            f"{sup['pixel_median_distance']:.3f}; certified to 0.1% for "
            f"{_pct(sup['pixel_converged'])}).",
        ]
    if "support" in figs:
        lines += [
            "",
            "Each test image with the 4 training images of largest weight in its hull "
            "projection (label and weight) in feature space (upper row) and pixel space "
            "(lower row).",
            "",
            f"![support]({figs['support']})",
        ]
    elif "support" in left_out:
        lines += [
            "",
            "_The figure of test images with the training images that support their hull "
            f"projection is left out: {left_out['support']}._",
        ]
    return lines + [""]
