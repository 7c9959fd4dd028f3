"""One image back in pixels: the paper's section 7.1 for a fitted guard (``guard explain``).

For an input ``x`` with features ``x_phi`` (predicted class ``i``):

* Table 1: the margin to every class, exact (eq. 7-12) next to the closed-form hyperplane
  distance (a lower bound), the Lipschitz constant and the training features inside ``B(x_phi)``;
* ``flip``: the image closest to ``x`` that maps to the closest flip point (eq. 17-18; Fig. 3c),
  and (``flip_boundary``) the image closest to ``x`` that maps to *any* point of the same
  boundary (eq. 7 through the model: the closest image the model sees on that boundary). The
  exact flip point often has coordinates at 0 (the orthant's face, eq. 10) that few images
  reach, so the first may come back not met; the second always has a solution;
* ``hull``: the image closest to ``x`` that maps to the projection of ``x_phi`` onto the hull of
  the training features (eq. 17-18, 24; Fig. 5c), and the training images with the largest
  weights in that projection (Fig. 6b);
* ``perimeter``: images on the perimeter of ``B(x_phi)`` closest to several references (black,
  white, ``x`` itself, training images; eq. 15-16 with equality; Fig. 7);
* ``morph``: from a training image ``x_t`` of class ``i`` inside ``B(x_phi)`` to ``x``: the image
  closest to ``x_t`` with ``||N(x') - x_phi|| <= lam`` while ``lam`` shrinks from
  ``||phi(x_t) - x_phi||`` to 0 (eq. 15-16; Fig. 8); every step lies inside ``B(x_phi)``, so it
  keeps class ``i`` (eq. 13);
* ``path``: the straight pixel-space path from ``x_t`` to ``x`` mapped to the feature space and
  drawn with the two-point equidistant projection (Fig. 9).

Every pre-image is one :func:`~.solver.invert` solve through the model's verified torch twin
(:class:`~guard.model.torch_twin.TorchTwin`), judged on the deployed model's own features
(onnxruntime). A time budget skips the solves that no longer fit (and says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry.margins import compute_margins
from ..geometry.progress import progress_bar
from ..model.torch_twin import TorchTwin
from .projection import project_path, two_point_equidistant
from .solver import Inversion, SolverConfig, invert, segment_crossing
from .targets import BallTarget, BoundaryTarget, PointTarget, Target

__all__ = ["ExplainConfig", "Explanation", "Solve", "explain"]


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of :func:`explain`.

    Attributes:
        n_perimeter: references for images on the perimeter of ``B(x_phi)`` (black, white, the
            image itself, then training images of the nearest and of the predicted class).
        n_morph: steps of the morph (the last one maps exactly to ``x_phi``).
        n_path: points on the straight pixel-space path.
        n_support: training images shown for the hull projection.
        morph_fraction: the morph starts from the training image of the predicted class whose
            features lie farthest inside ``B(x_phi)`` but within this share of its radius.
        time_budget_s: wall-clock budget of all solves (``None``: none); solves that no longer
            fit are skipped and listed in the notes.
        solver: settings of every solve (tolerances, domain, per-solve budget).
    """

    n_perimeter: int = 4
    n_morph: int = 6
    n_path: int = 41
    n_support: int = 4
    morph_fraction: float = 0.9
    time_budget_s: float | None = None
    solver: SolverConfig = field(default_factory=SolverConfig)


@dataclass(frozen=True)
class Solve:
    """One pre-image of an explanation.

    Attributes:
        target: ``flip``, ``hull``, ``perimeter`` or ``morph``; name: a file-safe name.
        reference: what ``x_r`` was (e.g. ``"black"``, ``"training image 123"``);
        reference_image: ``x_r`` itself.
        inversion: the solver's result (image, residuals, distance, ``met``).
        predicted_class: the deployed model's class of the pre-image; logits: (n,) its logits.
        extra: target-specific numbers (flip: the two classes, their logit gap and its
            tolerance; ball: the radius; morph: the feature distances).
    """

    target: str
    name: str
    reference: str
    reference_image: np.ndarray
    inversion: Inversion
    predicted_class: int
    logits: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Explanation:
    """Everything :func:`explain` found for one input (n classes, f features).

    Attributes:
        x: the input (its own shape, float32); features: (f,); logits: (n,); pred: class.
        class_names: n names. margins, closed_form: (n,) exact and closed-form distances to
            each boundary (NaN at ``pred``); d_min, nearest_class; lipschitz: sigma_max(W);
            train_in_ball: training features inside ``B(x_phi)``; flip_point: (f,).
        hull_upper, hull_lower: certified hull distance; hull_projection: (f,);
        support_idx, support_alpha: (k,) training indices (into the data given to fit) and
            weights of the projection's largest weights; support_labels: their labels (or
            the model's classes), ``None`` when unknown; support_images: (k, ...) or ``None``
            without training images.
        morph_index: training index of the morph's start (``None``: no morph);
        morph_image: that image; path: (n_path, 2) the pixel path's features in the plane;
        path_pred: (n_path,) the model's class along the path; morph_uv: (m, 2) the morph's
            features in the same plane; path_ends: (2, 2) ``x_phi`` and ``phi(x_t)`` there.
        solves: every pre-image; notes: what was skipped or could not be done, and why.
        twin: how the torch twin was made and how closely it matched onnxruntime.
    """

    x: np.ndarray
    features: np.ndarray
    logits: np.ndarray
    pred: int
    class_names: list[str]
    margins: np.ndarray
    closed_form: np.ndarray
    d_min: float
    nearest_class: int
    lipschitz: float
    train_in_ball: int
    flip_point: np.ndarray
    hull_upper: float
    hull_lower: float
    hull_projection: np.ndarray
    support_idx: np.ndarray
    support_alpha: np.ndarray
    support_labels: np.ndarray | None
    support_images: np.ndarray | None
    morph_index: int | None
    morph_image: np.ndarray | None
    path: np.ndarray | None
    path_pred: np.ndarray | None
    morph_uv: np.ndarray | None
    path_ends: np.ndarray | None
    solves: list[Solve]
    notes: list[str]
    twin: dict[str, Any]


@dataclass
class _Plan:
    """One planned solve (run in order until the budget is spent)."""

    target: str
    name: str
    reference: str
    goal: Target
    x_r: np.ndarray
    starts: list[np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


def _training_rows(guard: Any, x_train: np.ndarray | None, rows: np.ndarray) -> None:
    """InputError unless ``x_train`` is the data the guard was fitted on, at the hull rows
    ``rows`` it will show (their features must be the stored training features)."""
    if x_train is None or rows.size == 0:
        return
    idx = guard.train_index_[rows]
    if len(x_train) <= int(idx.max()):
        raise InputError(
            f"the training data has {len(x_train)} inputs but the artifact was fitted on at "
            f"least {int(idx.max()) + 1}: pass the data given to guard fit"
        )
    feats = guard.model_.run(x_train[idx])[1]
    stored = guard.train_features_[rows]
    err = float(np.abs(feats - stored).max())
    if err > 1e-3 * (1.0 + float(np.abs(stored).max())):
        raise InputError(
            f"the training data is not the data this artifact was fitted on (features differ "
            f"by up to {err:.3g}): pass the data given to guard fit"
        )


def _labels(guard: Any, rows: np.ndarray) -> np.ndarray:
    labels = guard.train_labels_ if guard.train_labels_ is not None else guard.train_pred_
    return np.asarray(labels)[rows]


def _flip_check(guard: Any, z: np.ndarray, i: int, j: int, tol: float) -> dict[str, Any]:
    """Whether logits ``z`` lie on the i|j boundary within what the feature tolerance allows:
    ``|z_i - z_j| <= ||w_i - w_j|| tol`` and no other class above them by more than that."""
    W = guard.W_
    gap = float(z[i] - z[j])
    logit_tol = float(np.linalg.norm(W[i] - W[j]) * tol)
    others = np.delete(z, [i, j])
    top = float(others.max()) if others.size else -np.inf
    on = abs(gap) <= logit_tol and top <= max(z[i], z[j]) + float(
        np.linalg.norm(W, axis=1).max() * 2 * tol
    )
    return {
        "classes": [int(i), int(j)],
        "logit_gap": gap,
        "logit_tolerance": logit_tol,
        "on_boundary": bool(on),
    }


def _perimeter_refs(
    x: np.ndarray, lo: float, hi: float, train: dict[str, tuple[int, np.ndarray]], n: int
) -> list[tuple[str, str, np.ndarray]]:
    refs = [
        ("black", "black image", np.full_like(x, lo)),
        ("white", "white image", np.full_like(x, hi)),
        ("self", "the image itself", x),
    ]
    for key, (t, img) in train.items():
        refs.append((key, f"training image {t}", img))
    return refs[:n]


def explain(
    guard: Any,
    x: np.ndarray,
    *,
    x_train: np.ndarray | None = None,
    twin: TorchTwin | None = None,
    config: ExplainConfig | None = None,
    progress: bool = False,
) -> Explanation:
    """The paper's section 7.1 for one input ``x`` (the model's input shape, no batch axis).

    Args:
        guard: a fitted :class:`~guard.Guard` with its model.
        x: the input.
        x_train: the data given to ``guard fit`` (its images are the hull's support, the
            morph's start and perimeter references); ``None`` leaves those out (noted).
        twin: the model's torch twin; default :meth:`TorchTwin.from_onnx` verified on the
            guard's reference inputs and ``x``.
        config: :class:`ExplainConfig`.
        progress: a progress bar over the solves.
    """
    cfg = config or ExplainConfig()
    model = guard.require_model()
    xb = model.prepare(np.asarray(x)[None])
    x = xb[0]
    lo, hi = cfg.solver.bounds
    if x.min() < lo or x.max() > hi:
        raise InputError(
            f"the input has pixels in [{x.min():g}, {x.max():g}], outside the domain "
            f"[{lo:g}, {hi:g}] the pre-images are searched in (set the domain to the model's "
            f"input range)"
        )
    if x_train is not None:
        x_train = model.prepare(x_train)
    if twin is None:
        check_x = (
            xb if guard.reference_inputs_ is None else np.concatenate([guard.reference_inputs_, xb])
        )
        twin = TorchTwin.from_onnx(model, check_x)
    t_start = time.monotonic()
    notes: list[str] = []

    def run(imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, f = model.run(imgs)
        return z.astype(np.float64), f.astype(np.float64)

    z0, f0 = run(xb)
    phi, logits = f0[0], z0[0]
    m = compute_margins(phi[None], guard.W_, guard.b_, guard.nonneg_)
    pred, d_min, j_near = int(m.pred[0]), float(m.d_min[0]), int(m.nearest_class[0])
    F = guard.train_features_
    d_train = np.sqrt(((F.astype(np.float64) - phi) ** 2).sum(axis=1))
    h = guard.hull_.query(phi[None], top_support=cfg.n_support)
    sup_rows = h.support_idx[0][h.support_idx[0] >= 0]
    sup_alpha = h.support_alpha[0][: len(sup_rows)]

    # training images: the hull's support, the morph's start, perimeter references
    ball = (d_train < cfg.morph_fraction * d_min) & (np.asarray(guard.train_pred_) == pred)
    morph_row = int(np.argmax(np.where(ball, d_train, -1.0))) if ball.any() else None
    near_row = int(np.argmin(np.where(guard.train_pred_ == j_near, d_train, np.inf)))
    same_row = int(np.argmin(np.where(guard.train_pred_ == pred, d_train, np.inf)))
    train_imgs: dict[str, tuple[int, np.ndarray]] = {}
    support_images = None
    if x_train is None:
        notes.append(
            "no training images given: the hull's support images, the morph and the training "
            "references of the perimeter are left out"
        )
    else:
        used = [r for r in (morph_row, near_row, same_row) if r is not None]
        _training_rows(guard, x_train, np.unique(np.concatenate([sup_rows, used])))
        support_images = x_train[guard.train_index_[sup_rows]]
        for key, row in (("nearest_class", near_row), ("same_class", same_row)):
            t = int(guard.train_index_[row])
            train_imgs[f"train_{key}"] = (t, x_train[t])
    if morph_row is None and x_train is not None:
        notes.append(
            f"no training image of class {pred} lies inside {cfg.morph_fraction:g} x the radius "
            f"of B(x_phi) ({d_min:.4g}): no morph (the paper's morph stays inside the ball)"
        )

    # the solves, in order of importance
    plans: list[_Plan] = [
        _Plan(
            "flip",
            "flip",
            "the image itself",
            PointTarget(m.flip_point[0]),
            x,
            [x],
            {"kind": "the closest flip point"},
        ),
        _Plan(
            "flip",
            "flip_boundary",
            "the image itself",
            BoundaryTarget(guard.W_, guard.b_, pred, j_near),
            x,
            [x],
            {"kind": "any point of the same boundary"},
        ),
        _Plan("hull", "hull", "the image itself", PointTarget(h.projection[0]), x, [x]),
    ]
    if np.isfinite(d_min) and d_min > 0:
        for key, desc, ref in _perimeter_refs(x, lo, hi, train_imgs, cfg.n_perimeter):
            plans.append(
                _Plan(
                    "perimeter",
                    f"perimeter_{key}",
                    desc,
                    BallTarget(phi, d_min, perimeter=True),
                    ref,
                    [ref] if key == "self" else [ref, x],
                    {"radius": d_min},
                )
            )
    else:
        notes.append(f"B(x_phi) has radius {d_min}: no perimeter images")
    morph_image = None
    if morph_row is not None and x_train is not None:
        t_idx = int(guard.train_index_[morph_row])
        morph_image = x_train[t_idx]
        D = float(d_train[morph_row])
        for k in range(1, cfg.n_morph + 1):
            lam = D * (1 - k / cfg.n_morph)
            goal: Target = PointTarget(phi) if k == cfg.n_morph else BallTarget(phi, lam)
            plans.append(
                _Plan(
                    "morph",
                    f"morph_{k:02d}",
                    f"training image {t_idx}",
                    goal,
                    morph_image,
                    [x, morph_image],  # x meets every step: the morph never ends worse than x
                    {"radius": lam, "step": k, "start_distance": D},
                )
            )

    solves: list[Solve] = []
    previous: np.ndarray | None = None
    with progress_bar(len(plans), "pre-images", enabled=progress) as bar:
        for plan in plans:
            left = None
            if cfg.time_budget_s is not None:
                left = cfg.time_budget_s - (time.monotonic() - t_start)
                if left <= 0:
                    notes.append(f"time budget reached: {plan.name} and later solves skipped")
                    break
            per = cfg.solver.max_seconds
            budget = left if per is None else (per if left is None else min(per, left))
            starts = list(plan.starts)
            if plan.target == "morph" and previous is not None:
                starts.insert(1, previous)  # continuation along the shrinking radius
            if isinstance(plan.goal, BallTarget):
                # feasible starts: where the pixel line from x (the ball's centre) to each
                # start, or to black and white, crosses the perimeter
                ends = [s for s in starts if s is not x] or [
                    np.full_like(x, lo),
                    np.full_like(x, hi),
                ]
                for end in ends:
                    c = segment_crossing(twin.features, plan.goal, x, end)
                    if c is not None:
                        starts.insert(0, c.reshape(x.shape))
            bar.set_postfix_str(plan.name)
            inv = invert(
                twin.features,
                plan.goal,
                plan.x_r,
                starts=starts,
                check=lambda imgs: run(imgs)[1],
                config=replace(cfg.solver, max_seconds=budget),
                relax=twin.set_relu_slope if twin.n_relus else None,
            )
            z = run(inv.image[None])[0][0]
            extra = dict(plan.extra)
            if plan.target == "flip":
                extra |= _flip_check(guard, z, pred, j_near, inv.tolerance)
            if plan.target == "morph":
                extra["feature_distance_to_x"] = float(np.linalg.norm(inv.features - phi))
                previous = inv.image
            solves.append(
                Solve(
                    plan.target,
                    plan.name,
                    plan.reference,
                    plan.x_r,
                    inv,
                    int(np.argmax(z)),
                    z,
                    extra,
                )
            )
            bar.update(1)

    # the straight pixel path x_t -> x in the feature space (Fig. 9)
    path = path_pred = morph_uv = path_ends = None
    if morph_image is not None:
        s = np.linspace(0.0, 1.0, cfg.n_path, dtype=np.float32)
        pts = (1 - s)[:, None] * morph_image.reshape(1, -1) + s[:, None] * x.reshape(1, -1)
        zp, fp = run(pts.reshape(-1, *x.shape).astype(np.float32))
        phi_t = fp[0]
        path = project_path(fp, phi, phi_t)
        path_pred = np.argmax(zp, axis=1)
        path_ends = two_point_equidistant(np.stack([phi, phi_t]), phi, phi_t)
        feats = [sv.inversion.features for sv in solves if sv.target == "morph"]
        if feats:
            morph_uv = two_point_equidistant(np.stack(feats), phi, phi_t)

    return Explanation(
        x=x,
        features=phi,
        logits=logits,
        pred=pred,
        class_names=list(guard.class_names_),
        margins=m.margins[0],
        closed_form=m.closed_form[0],
        d_min=d_min,
        nearest_class=j_near,
        lipschitz=float(guard.lipschitz_),
        train_in_ball=int(np.sum(d_train < d_min)),
        flip_point=m.flip_point[0],
        hull_upper=float(h.upper[0]),
        hull_lower=float(h.lower[0]),
        hull_projection=h.projection[0],
        support_idx=guard.train_index_[sup_rows],
        support_alpha=sup_alpha,
        support_labels=_labels(guard, sup_rows) if sup_rows.size else None,
        support_images=support_images,
        morph_index=None
        if morph_image is None or morph_row is None
        else int(guard.train_index_[morph_row]),
        morph_image=morph_image,
        path=path,
        path_pred=path_pred,
        morph_uv=morph_uv,
        path_ends=path_ends,
        solves=solves,
        notes=notes,
        twin={
            "source": twin.source,
            "checked_inputs": None if twin.check is None else twin.check.n,
            "logits_error": None if twin.check is None else twin.check.logits_error,
            "features_error": None if twin.check is None else twin.check.features_error,
        },
    )
