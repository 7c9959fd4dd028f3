"""The OOD suite's verdict and tables: each candidate's worst case against the best peer over
every (model, OOD set) pair, and the Markdown of the per-pair results.

Results travel as plain JSON-able dicts (what ``reports/ood_suite/suite.json`` holds)::

    {"models": {model: {"description", "n_train", "n_calib", "n_id", "ood_sizes": {set: n},
                        "methods": {method: {"auroc": {set: x}, "fpr95": {set: x},
                                             "false_abstain": x, "abstain_range": [lo, hi] | None,
                                             "weights": [...] | None}}}},
     "peers": [...], "candidates": [...], "default": name, "rate": 0.05}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard.evaluation.ood import COMBINED, LABELS

__all__ = ["Verdict", "pairs", "render", "verdicts"]

#: AUROC a default may lose to the best peer on a pair (the issue's acceptance tolerance).
TOLERANCE = 0.002

#: The single-model report's method names, with "raw" where raw and spherical sit side by side.
_LABELS = {
    **{k: v for k, v in LABELS.items() if k != COMBINED},
    "hull": "raw hull distance",
    "ambiguity": "raw ambiguity",
}


def pairs(res: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (model, OOD set) pair, in table order."""
    return [(m, s) for m, r in res["models"].items() for s in r["ood_sizes"]]


def best_peer(res: dict[str, Any], model: str, s: str, key: str = "auroc") -> tuple[str, float]:
    """The best peer on one pair by AUROC (highest) or FPR@95 (lowest): (name, value)."""
    meth = res["models"][model]["methods"]
    vals = {p: meth[p][key][s] for p in res["peers"]}
    name = (max if key == "auroc" else min)(vals, key=lambda p: vals[p])
    return name, vals[name]


@dataclass(frozen=True)
class Verdict:
    """A candidate over all pairs: ``worst`` = min over pairs of (its AUROC − the best peer's),
    at ``worst_pair``; ``n_ge`` pairs where it is at least as good (at 4 decimals) of
    ``n_pairs``; ``mean`` difference; ``within`` = every pair within :data:`TOLERANCE`;
    ``abstain_ok`` = its false-abstain rate inside the conformal range on every model."""

    name: str
    worst: float
    worst_pair: tuple[str, str]
    n_ge: int
    n_pairs: int
    mean: float
    within: bool
    abstain_ok: bool


def verdicts(res: dict[str, Any]) -> list[Verdict]:
    """Every candidate's :class:`Verdict`, best worst case first."""
    out = []
    all_pairs = pairs(res)
    for c in res["candidates"]:
        deltas = []
        for m, s in all_pairs:
            mine = res["models"][m]["methods"][c]["auroc"][s]
            deltas.append((mine - best_peer(res, m, s)[1], (m, s), mine))
        worst = min(deltas)
        n_ge = sum(round(mine, 4) >= round(mine - d, 4) for d, _, mine in deltas)
        ok = True
        for r in res["models"].values():
            row = r["methods"][c]
            lo, hi = row["abstain_range"]
            ok &= lo <= row["false_abstain"] <= hi
        out.append(
            Verdict(
                c,
                worst[0],
                worst[1],
                n_ge,
                len(deltas),
                sum(d for d, _, _ in deltas) / len(deltas),
                worst[0] >= -TOLERANCE,
                bool(ok),
            )
        )
    return sorted(out, key=lambda v: -v.worst)


def _label(res: dict[str, Any], m: str) -> str:
    if m == res["default"]:
        return f"**{m}**"
    return _LABELS.get(m, m)


def _summary(res: dict[str, Any]) -> list[str]:
    d = res["default"]
    lines = [
        f"## {d} vs the best peer on every pair",
        "",
        "Peers: "
        + ", ".join(_LABELS.get(p, p) for p in res["peers"])
        + ". Δ = guard minus the best peer on that pair (AUROC: higher is better; FPR@95: lower "
        "is better).",
        "",
        "| model | OOD set | guard AUROC | best peer AUROC | **guard − best peer** | guard FPR@95 "
        "| best peer FPR@95 | Δ FPR@95 | previous default AUROC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, s in pairs(res):
        meth = res["models"][m]["methods"]
        pa, va = best_peer(res, m, s)
        pf, vf = best_peer(res, m, s, "fpr95")
        a, f = meth[d]["auroc"][s], meth[d]["fpr95"][s]
        prev = meth.get("previous default", {}).get("auroc", {}).get(s)
        lines.append(
            f"| {m} | {s} | {a:.4f} | {va:.4f} ({_LABELS.get(pa, pa)}) | {a - va:+.4f} | {f:.3f} | "
            f"{vf:.3f} ({_LABELS.get(pf, pf)}) | {f - vf:+.3f} | "
            + ("–" if prev is None else f"{prev:.4f}")
            + " |"
        )
    return lines


def _candidates(res: dict[str, Any]) -> list[str]:
    lines = [
        "## Candidates for the default, by worst case over all pairs",
        "",
        "Worst Δ = min over every (model, OOD set) pair of (candidate AUROC − best peer AUROC). "
        f"Within = every pair at most {TOLERANCE} below the best peer; abstain = realised "
        "false-abstain rate inside its 95% conformal range on every model.",
        "",
        "| candidate | worst (candidate − best peer) | at | pairs ≥ best peer | mean Δ | within "
        "| abstain |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in verdicts(res):
        lines.append(
            f"| {_label(res, v.name)} | {v.worst:+.4f} | {v.worst_pair[0]} / {v.worst_pair[1]} | "
            f"{v.n_ge} / {v.n_pairs} | {v.mean:+.4f} | {'yes' if v.within else '**no**'} | "
            f"{'yes' if v.abstain_ok else '**no**'} |"
        )
    return lines


def _model(res: dict[str, Any], m: str) -> list[str]:
    r = res["models"][m]
    sets = list(r["ood_sizes"])
    sizes = ", ".join(f"{s} {n}" for s, n in r["ood_sizes"].items())
    lines = [
        f"### {m}: {r['description']}",
        "",
        f"Guard and peers fitted on {r['n_train']} training features, calibrated on "
        f"{r['n_calib']} held-out in-distribution inputs; ID = {r['n_id']} test inputs; OOD: "
        f"{sizes}. "
        "Cells: AUROC / FPR@95. False abstain: realised rate on the ID test inputs at the "
        f"calibrated {100 * res['rate']:g}% (guard scores: at p < {res['rate']:g}, with the 95% "
        "range exchangeable data would give).",
        "",
        "| method | " + " | ".join(sets) + " | false abstain |",
        "|---" * (len(sets) + 2) + "|",
    ]
    order = [*res["peers"], *res["geometry"], *res["candidates"]]
    for meth in order:
        row = r["methods"][meth]
        cells = []
        for s in sets:
            top = max(r["methods"][p]["auroc"][s] for p in order)
            a = f"{row['auroc'][s]:.4f}"
            cells.append(f"{'**' + a + '**' if a == f'{top:.4f}' else a} / {row['fpr95'][s]:.3f}")
        fa = f"{100 * row['false_abstain']:.1f}%"
        if row.get("abstain_range"):
            lo, hi = row["abstain_range"]
            fa += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
        lines.append(f"| {_label(res, meth)} | " + " | ".join(cells) + f" | {fa} |")
    return lines


def render(res: dict[str, Any], command: str, seconds: float) -> str:
    """The suite's Markdown report."""
    parts = [
        "# Multi-model OOD suite: the guard's abstention score vs its peers",
        "",
        "Every (model, OOD set) pair; ID test inputs never seen in training or calibration. "
        "Each model: guard and peers fitted on the same training features (published peer "
        "defaults); thresholds and p-values from the same held-out in-distribution inputs: "
        "10% of the training images for the Fashion-MNIST models (as `guard fit` does), 1,000 "
        "of the 2,000 images the MNIST / notMNIST models were not trained on (as `guard fit "
        "--calib` does; the other 1,000 are the ID test set). Nothing is fitted on OOD data.",
        "",
        *_summary(res),
        "",
        *_candidates(res),
        "",
        "## Per model: AUROC / FPR@95 per OOD set, false-abstain rate",
        "",
    ]
    for m in res["models"]:
        parts += [*_model(res, m), ""]
    parts.append(f"_{seconds:.0f} s; command: `{command}`_")
    return "\n".join(parts) + "\n"
