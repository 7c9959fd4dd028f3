"""PNG figures of an explanation (matplotlib, headless): the paper's Fig. 3, 5, 6b, 7, 8 and 9
for one image. Images are drawn as the report draws them (N×C×H×W, N×H×W×C with 1 or 3
channels, or N×H×W); pixel values are shown as they are in ``[lo, hi]`` (not rescaled), and
differences on a symmetric colour scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.report.figures import _plt, _save, image_layout
from .explain import Explanation, Solve

__all__ = ["can_draw", "figure_morph", "figure_path", "figure_perimeter", "figure_target"]


def can_draw(x: np.ndarray) -> bool:
    """Whether one input of this shape is an image the figures can draw."""
    return image_layout((1, *x.shape)) is not None


def _hw(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    layout = image_layout((1, *img.shape))
    if layout == "NCHW":
        return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    if layout == "NHWC":
        return img[..., 0] if img.shape[-1] == 1 else img
    return img


def _image(ax: Any, img: np.ndarray, title: str, bounds: tuple[float, float]) -> None:
    lo, hi = bounds
    a = (np.clip(_hw(img), lo, hi) - lo) / (hi - lo)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _diff(ax: Any, d: np.ndarray, title: str) -> None:
    d = _hw(d)
    if d.ndim == 3:
        d = d.mean(axis=2)  # RGB difference: the mean over channels
    v = float(np.abs(d).max()) or 1.0
    ax.imshow(d, cmap="RdBu_r", vmin=-v, vmax=v)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _features(ax: Any, f: np.ndarray, title: str, vmax: float) -> None:
    """A feature vector as a square image when its size is a square (the paper's 8x8), else
    as bars."""
    k = int(round(np.sqrt(f.size)))
    if k * k == f.size:
        ax.imshow(f.reshape(k, k), cmap="viridis", vmin=0 if f.min() >= 0 else -vmax, vmax=vmax)
        ax.axis("off")
    else:
        ax.bar(np.arange(f.size), f, width=1.0)
        ax.set_ylim(min(0.0, float(f.min())), vmax)
        ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=7)


def figure_target(e: Explanation, solve: Solve, goal: np.ndarray, what: str, path: Path) -> str:
    """Fig. 3 / Fig. 5: ``x_phi``, the feature-space target and their difference; the image,
    its pre-image and their difference."""
    plt = _plt()
    inv = solve.inversion
    fig, axes = plt.subplots(2, 3, figsize=(7.2, 5.0))
    vmax = float(max(e.features.max(), goal.max(), 1e-12))
    _features(axes[0][0], e.features, "x_phi", vmax)
    _features(axes[0][1], goal, what, vmax)
    dv = goal - e.features
    k = int(round(np.sqrt(dv.size)))
    if k * k == dv.size:
        _diff(axes[0][2], dv.reshape(k, k), f"difference (L2 {np.linalg.norm(dv):.3f})")
    else:
        axes[0][2].bar(np.arange(dv.size), dv, width=1.0)
        axes[0][2].set_title(f"difference (L2 {np.linalg.norm(dv):.3f})", fontsize=7)
    bounds = _bounds(e)
    name = e.class_names
    _image(axes[1][0], e.x, f"x: {name[e.pred]}", bounds)
    verdict = "met" if inv.met else "NOT met"
    _image(
        axes[1][1],
        inv.image,
        f"pre-image: {name[solve.predicted_class]}\n"
        f"residual {inv.feature_residual:.2g} ({verdict})",
        bounds,
    )
    _diff(axes[1][2], inv.image - e.x, f"pre-image - x (L2 {inv.pixel_distance:.3f})")
    fig.tight_layout()
    return _save(fig, path)


def _bounds(e: Explanation) -> tuple[float, float]:
    lo = min(0.0, float(e.x.min()))
    hi = max(1.0, float(e.x.max()))
    return lo, hi


def figure_support(e: Explanation, path: Path) -> str:
    """Fig. 6b: the training images with the largest weights in the hull projection."""
    plt = _plt()
    assert e.support_images is not None  # noqa: S101 - the caller checks
    k = len(e.support_images)
    fig, axes = plt.subplots(1, k + 1, figsize=(1.7 * (k + 1), 2.2))
    axes = np.atleast_1d(axes)
    bounds = _bounds(e)
    _image(axes[0], e.x, f"x: {e.class_names[e.pred]}", bounds)
    labels = e.support_labels if e.support_labels is not None else [-1] * k
    for ax, img, t, a, lab in zip(
        axes[1:], e.support_images, e.support_idx, e.support_alpha, labels
    ):
        cls = e.class_names[int(lab)] if lab >= 0 else "?"
        _image(ax, img, f"#{t} {cls}\nalpha {a:.3f}", bounds)
    fig.tight_layout()
    return _save(fig, path)


def figure_perimeter(
    e: Explanation, solves: list[Solve], refs: list[np.ndarray], path: Path
) -> str:
    """Fig. 7: each reference next to the closest image on the perimeter of ``B(x_phi)``."""
    plt = _plt()
    n = len(solves)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.2), squeeze=False)
    bounds = _bounds(e)
    for c, (s, ref) in enumerate(zip(solves, refs)):
        _image(axes[0][c], ref, s.reference, bounds)
        inv = s.inversion
        verdict = "met" if inv.met else "NOT met"
        _image(
            axes[1][c],
            inv.image,
            f"{e.class_names[s.predicted_class]}; pixel dist {inv.pixel_distance:.2f}\n"
            f"residual {inv.feature_residual:.2g} ({verdict})",
            bounds,
        )
    fig.tight_layout()
    return _save(fig, path)


def figure_morph(e: Explanation, solves: list[Solve], path: Path) -> str:
    """Fig. 8: the training image, the morph's steps (shrinking radius) and the image."""
    plt = _plt()
    assert e.morph_image is not None  # noqa: S101 - the caller checks
    n = len(solves) + 2
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.3))
    bounds = _bounds(e)
    d0 = float(np.linalg.norm(solves[0].extra["start_distance"])) if solves else 0.0
    _image(axes[0], e.morph_image, f"x_t #{e.morph_index}\nfeature dist {d0:.3f}", bounds)
    for ax, s in zip(axes[1:-1], solves):
        inv = s.inversion
        mark = "" if inv.met else " NOT met"
        _image(
            ax,
            inv.image,
            f"r {s.extra['radius']:.3f}: {s.extra['feature_distance_to_x']:.3f}{mark}\n"
            f"{e.class_names[s.predicted_class]}",
            bounds,
        )
    _image(axes[-1], e.x, f"x: {e.class_names[e.pred]}", bounds)
    fig.tight_layout()
    return _save(fig, path)


def figure_path(e: Explanation, path: Path) -> str:
    """Fig. 9: the straight pixel-space path from ``x_t`` to ``x`` in the feature space, drawn
    with the two-point equidistant projection; the circle is ``B(x_phi)`` (exact in this
    projection), crosses mark the morph's steps."""
    plt = _plt()
    assert e.path is not None and e.path_pred is not None and e.path_ends is not None  # noqa: S101
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.plot(e.path[:, 0], e.path[:, 1], "-", color="tab:blue", lw=1.2, label="pixel-space line")
    for c in np.unique(e.path_pred):
        sel = e.path_pred == c
        ax.scatter(e.path[sel, 0], e.path[sel, 1], s=12, label=f"class {e.class_names[int(c)]}")
    ax.plot(
        e.path_ends[:, 0],
        e.path_ends[:, 1],
        "--",
        color="gray",
        lw=0.8,
        label="feature-space segment",
    )
    if e.morph_uv is not None:
        ax.scatter(
            e.morph_uv[:, 0], e.morph_uv[:, 1], marker="x", color="k", s=30, label="morph steps"
        )
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(
        e.d_min * np.cos(t),
        e.d_min * np.sin(t),
        color="tab:red",
        lw=0.8,
        label=f"B(x_phi), r = {e.d_min:.3f}",
    )
    ax.annotate("x", e.path_ends[0], fontsize=9)
    ax.annotate(f"x_t #{e.morph_index}", e.path_ends[1], fontsize=9)
    ax.set_aspect("equal")
    ax.legend(fontsize=6, loc="best")
    ax.set_title("pixel-space line mapped to the feature space (two-point equidistant)", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
