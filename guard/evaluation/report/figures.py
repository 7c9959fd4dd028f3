"""PNG figures of a report (matplotlib, headless): the paper's Fig. 10, 13 and 15 on our data,
the d_hull-vs-d_min plane, and the hull support of a few test images in feature vs pixel space.

Image figures draw inputs laid out as N×C×H×W, N×H×W×C (1 or 3 channels) or N×H×W
(:func:`image_layout`); for other inputs :func:`why_not_images` says why they are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError


def _plt():
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the report extra
        raise InputError(
            "guard report needs matplotlib: pip install 'guard-classifier[eval]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _log_bins(values: list[np.ndarray], n: int = 60) -> np.ndarray:
    pos = np.concatenate([v[v > 0] for v in values if v.size])
    lo, hi = pos.min(), pos.max()
    return np.geomspace(max(lo, 1e-6 * hi), hi * 1.01, n)


def distances(sets: dict[str, dict[str, np.ndarray]], path: Path) -> str:
    """Paper Fig. 10: distributions of d_min and d_hull per set (log scale; density)."""
    plt = _plt()
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, key, title in (
        (axes[0], "d_min", "distance to the nearest decision boundary"),
        (axes[1], "d_hull", "distance to the training hull (upper bound)"),
    ):
        vals = {name: v[key] for name, v in sets.items() if key in v}
        bins = _log_bins(list(vals.values()))
        for name, v in vals.items():
            ax.hist(
                np.clip(v, bins[0], None),
                bins=bins,
                histtype="step",
                density=True,
                label=f"{name} (n={len(v)})",
                linewidth=1.4,
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel("density")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    return _save(fig, path)


def ambiguity(sets: dict[str, np.ndarray], path: Path) -> str:
    """Paper Fig. 15: distributions of the ambiguity indicator d_min - d_hull per set."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    allv = np.concatenate(list(sets.values()))
    lo, hi = np.quantile(allv, [0.002, 0.998])
    bins = np.linspace(lo, hi, 80)
    for name, v in sets.items():
        ax.hist(
            np.clip(v, lo, hi),
            bins=bins,
            histtype="step",
            density=True,
            linewidth=1.4,
            label=f"{name} (n={len(v)})",
        )
    ax.axvline(0.0, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("ambiguity d_min - d_hull (negative: boundary closer than the hull)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plane(d_min: np.ndarray, d_hull: np.ndarray, correct: np.ndarray, path: Path) -> str:
    """Test inputs in the (d_hull, d_min) plane; below the diagonal = ambiguous."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(d_hull[correct], d_min[correct], s=4, alpha=0.5, label="correct")
    ax.scatter(d_hull[~correct], d_min[~correct], s=8, alpha=0.8, color="C3", label="wrong")
    top = float(max(d_hull.max(), d_min.max()))
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="d_min = d_hull")
    ax.set_xlabel("d_hull")
    ax.set_ylabel("d_min")
    ax.legend(fontsize=8)
    return _save(fig, path)


#: Channel counts the image figures draw: grayscale and RGB.
_CHANNELS = (1, 3)


def image_layout(shape: tuple[int, ...]) -> str | None:
    """How a batch of inputs of ``shape`` holds images: ``"NCHW"``, ``"NHWC"`` (1 or 3
    channels), ``"NHW"`` (grayscale), or ``None`` when they are not images the figures can draw.
    When both ends could be channels (``N x 3 x H x 3``), channels first wins."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[1] in _CHANNELS:
            return "NCHW"
        if shape[3] in _CHANNELS:
            return "NHWC"
    return None


def why_not_images(shape: tuple[int, ...]) -> str | None:
    """Why inputs of ``shape`` get no image figures (``None`` when they do)."""
    if image_layout(shape) is not None:
        return None
    return (
        f"the inputs (each of shape {tuple(shape[1:])}) are not images with 1 or 3 channels "
        f"as N×C×H×W, N×H×W×C or N×H×W, so they cannot be drawn"
    )


def can_show(x: np.ndarray) -> bool:
    """Inputs that are images: see :func:`image_layout`."""
    return image_layout(x.shape) is not None


def _to_hw(img: np.ndarray) -> np.ndarray:
    """One image (C x H x W, H x W x C or H x W) as H x W (gray) or H x W x 3 (RGB)."""
    img = np.asarray(img, dtype=np.float64)
    layout = image_layout((1, *img.shape))
    if layout == "NCHW":
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    elif layout == "NHWC":
        img = img[..., 0] if img.shape[-1] == 1 else img
    return img


def _show(ax, img: np.ndarray, title: str) -> None:
    img = _to_hw(img)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=6.5)
    ax.axis("off")


def extremes(x: np.ndarray, titles: list[str], order: np.ndarray, k: int, path: Path) -> str:
    """Paper Fig. 13: the ``k`` most ambiguous (first row) and least ambiguous test images."""
    plt = _plt()
    fig, axes = plt.subplots(2, k, figsize=(1.9 * k, 4.2))
    for row, idx in enumerate((order[:k], order[::-1][:k])):
        for ax, i in zip(axes[row], idx):
            _show(ax, x[i], titles[i])
    axes[0][0].text(
        -0.3,
        0.5,
        "most\nambiguous",
        transform=axes[0][0].transAxes,
        ha="right",
        va="center",
        fontsize=8,
    )
    axes[1][0].text(
        -0.3,
        0.5,
        "least\nambiguous",
        transform=axes[1][0].transAxes,
        ha="right",
        va="center",
        fontsize=8,
    )
    return _save(fig, path)


def support(rows: list[dict], path: Path) -> str:
    """Paper Fig. 6: a test image, the training images with the largest weights in its hull
    projection in feature space, and in pixel space."""
    plt = _plt()
    k = max(len(r["feature"]) for r in rows)
    fig, axes = plt.subplots(2 * len(rows), k + 1, figsize=(1.5 * (k + 1), 3.2 * len(rows)))
    axes = np.atleast_2d(axes)
    for j, r in enumerate(rows):
        for half, key in enumerate(("feature", "pixel")):
            ax_row = axes[2 * j + half]
            if half == 0:
                _show(ax_row[0], r["image"], r["title"])
            else:
                ax_row[0].axis("off")
            ax_row[0].text(
                -0.1,
                -0.15 if half == 0 else 0.5,
                f"{key} space",
                fontsize=8,
                transform=ax_row[0].transAxes,
                ha="left",
            )
            for c in range(k):
                ax = ax_row[c + 1]
                if c < len(r[key]):
                    img, title = r[key][c]
                    _show(ax, img, title)
                else:
                    ax.axis("off")
    return _save(fig, path)
