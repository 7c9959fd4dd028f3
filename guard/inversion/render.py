"""Write an explanation as files: ``explain.md`` (one page), ``explain.json`` (every number, a
list ``solves`` with one record per pre-image), ``<name>.npy`` (exact float32 pixels) and
``<name>.png`` per pre-image, and the figures of :mod:`.figures`.

The page links its figures relative to its own folder through ``../<folder>/``, so it still
shows them when included verbatim in another report of a sibling folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import figures
from .explain import Explanation, Solve

__all__ = ["solve_record", "write_explanation"]


def _num(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return [_num(a) for a in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_num(a) for a in v]
    if isinstance(v, dict):
        return {k: _num(a) for k, a in v.items()}
    return v


def solve_record(s: Solve, image: str) -> dict[str, Any]:
    """The JSON record of one pre-image (``image``: its ``.npy`` file name)."""
    inv = s.inversion
    return _num(
        {
            "target": s.target,
            "name": s.name,
            "reference": s.reference,
            "feature_residual": inv.feature_residual,
            "start_residual": inv.start_residual,
            "tolerance": inv.tolerance,
            "met": inv.met,
            "pixel_distance": inv.pixel_distance,
            "predicted_class": s.predicted_class,
            "logits": s.logits,
            "image": image,
            "seconds": inv.seconds,
            "starts": len(inv.starts),
            "message": inv.message,
        }
        | s.extra
    )


def _single_png(img: np.ndarray, path: Path) -> None:
    plt = figures._plt()
    fig, ax = plt.subplots(figsize=(2.0, 2.0))
    figures._image(ax, img, "", (min(0.0, float(img.min())), max(1.0, float(img.max()))))
    figures._save(fig, path)


def _f(v: float, digits: int = 4) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def write_explanation(
    e: Explanation, out: str | Path, *, command: str = "", title: str | None = None
) -> Path:
    """Write ``e`` into the folder ``out`` (created); returns the path of ``explain.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    draw = figures.can_draw(e.x)
    np.save(out / "input.npy", e.x)
    if draw:
        _single_png(e.x, out / "input.png")
    records = []
    for s in e.solves:
        np.save(out / f"{s.name}.npy", s.inversion.image)
        if draw:
            _single_png(s.inversion.image, out / f"{s.name}.png")
        records.append(solve_record(s, f"{s.name}.npy"))
    figs: dict[str, str] = {}
    by = {s.name: s for s in e.solves}
    if draw:
        if "flip" in by:
            figs["flip"] = figures.figure_target(
                e, by["flip"], e.flip_point, "closest flip point", out / "fig3_flip.png"
            )
        if "hull" in by:
            figs["hull"] = figures.figure_target(
                e, by["hull"], e.hull_projection, "hull projection", out / "fig5_hull.png"
            )
        if e.support_images is not None and len(e.support_images):
            figs["support"] = figures.figure_support(e, out / "fig6_support.png")
        per = [s for s in e.solves if s.target == "perimeter"]
        if per:
            refs = [s.reference_image for s in per]
            figs["perimeter"] = figures.figure_perimeter(e, per, refs, out / "fig7_perimeter.png")
        morph = [s for s in e.solves if s.target == "morph"]
        if morph and e.morph_image is not None:
            figs["morph"] = figures.figure_morph(e, morph, out / "fig8_morph.png")
    if e.path is not None:
        figs["path"] = figures.figure_path(e, out / "fig9_path.png")
    doc = {
        "pred": e.pred,
        "class_names": e.class_names,
        "logits": e.logits,
        "table1": {
            "margins": e.margins,
            "closed_form": e.closed_form,
            "d_min": e.d_min,
            "nearest_class": e.nearest_class,
            "lipschitz": e.lipschitz,
            "train_in_ball": e.train_in_ball,
        },
        "hull": {
            "upper": e.hull_upper,
            "lower": e.hull_lower,
            "support_idx": e.support_idx,
            "support_alpha": e.support_alpha,
            "support_labels": e.support_labels,
        },
        "morph_index": e.morph_index,
        "twin": e.twin,
        "solves": records,
        "notes": e.notes,
        "figures": figs,
        "command": command,
    }
    (out / "explain.json").write_text(json.dumps(_num(doc), indent=2, allow_nan=False) + "\n")
    md = out / "explain.md"
    md.write_text(_markdown(e, records, figs, out.name, command, title))
    return md


def _markdown(
    e: Explanation,
    records: list[dict[str, Any]],
    figs: dict[str, str],
    folder: str,
    command: str,
    title: str | None,
) -> str:
    names = e.class_names
    link = f"../{folder}/"
    lines = [
        f"# {title or 'Explain: back to pixels'}",
        "",
        f"Predicted class **{names[e.pred]}** (logit {e.logits[e.pred]:.3f}); nearest boundary: "
        f"**{names[e.nearest_class]}** at d_min = {e.d_min:.4f}; certified distance to the "
        f"training hull in [{e.hull_lower:.4f}, {e.hull_upper:.4f}]; ambiguity d_min − d_hull = "
        f"{e.d_min - e.hull_upper:.4f}; {e.train_in_ball} training features inside B(x_phi); "
        f"Lipschitz constant σ_max(W) = {e.lipschitz:.3f}.",
        "",
    ]
    if command:
        lines += [f"Made by `{command}`.", ""]
    lines += [
        "### Table 1: distance to each decision boundary",
        "",
        "| class | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        "| exact margin | " + " | ".join(_f(v) for v in e.margins) + " |",
        "| closed form (lower bound) | " + " | ".join(_f(v) for v in e.closed_form) + " |",
        "",
    ]
    lines += [
        "### Pre-images",
        "",
        "Each row is one solve of eq. 15–18 (the image closest to the reference whose features "
        "reach the target), judged on the deployed model's features (onnxruntime): *residual* = "
        "distance of the pre-image's features to the target set, *start* = the same for the "
        "reference, *met* = residual ≤ tolerance = rtol × start + atol.",
        "",
        "| target | reference | residual | start | tolerance | met | pixel distance | class |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['name']} | {r['reference']} | {_f(r['feature_residual'], 3)} | "
            f"{_f(r['start_residual'])} | {_f(r['tolerance'], 3)} | "
            f"{'yes' if r['met'] else '**no**'} | {_f(r['pixel_distance'])} | "
            f"{names[r['predicted_class']]} |"
        )
    flip = next((r for r in records if r["target"] == "flip"), None)
    if flip is not None:
        i, j = flip["classes"]
        lines += [
            "",
            f"Flip pre-image logits: {names[i]} − {names[j]} = {flip['logit_gap']:.3g} "
            f"(tolerance ‖w_i − w_j‖ × feature tolerance = {flip['logit_tolerance']:.3g}): "
            + ("on the boundary." if flip["on_boundary"] else "**not** on the boundary."),
        ]
    morph = [r for r in records if r["target"] == "morph"]
    if morph:
        kept = all(r["predicted_class"] == e.pred for r in morph)
        lines += [
            "",
            f"Morph: {len(morph)} steps from training image #{e.morph_index}; every step "
            + (
                "is classified " + names[e.pred]
                if kept
                else "is **not** classified " + names[e.pred]
            )
            + ".",
        ]
    captions = {
        "flip": "Fig. 3: x_phi, the closest flip point and their difference; the image, the "
        "pre-image of the flip point and their difference.",
        "hull": "Fig. 5: the projection of x_phi onto the hull of the training features and "
        "its pre-image.",
        "support": "Fig. 6b: the training images with the largest weights in the hull projection.",
        "perimeter": "Fig. 7: references (top) and the closest images on the perimeter of "
        "B(x_phi) (bottom).",
        "morph": "Fig. 8: morph from a training image inside B(x_phi) to the image (radius "
        "r shrinking; title: r, then the feature distance to x_phi).",
        "path": "Fig. 9: the straight pixel-space line between the two images, in the feature "
        "space (two-point equidistant projection: distances to both ends exact).",
    }
    for key, cap in captions.items():
        if key in figs:
            lines += ["", cap, "", f"![{key}]({link}{figs[key]})"]
    if e.notes:
        lines += ["", "Notes:", ""] + [f"* {n}" for n in e.notes]
    t = e.twin
    if t.get("logits_error") is not None:
        lines += [
            "",
            f"Gradients from the model's torch twin ({t['source']}), checked against "
            f"onnxruntime on {t['checked_inputs']} inputs: logits differ by "
            f"{t['logits_error']:.1e}, features by {t['features_error']:.1e} of their largest "
            f"magnitude.",
        ]
    return "\n".join(lines) + "\n"
