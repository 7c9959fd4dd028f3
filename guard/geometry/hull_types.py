"""The certified hull distance's settings (:class:`HullConfig`) and result
(:class:`HullDistances`); the algorithm is in :mod:`guard.geometry.hull`."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import GeometryError

SCANS = ("auto", "exact", "pca")
ENGINES = ("auto", "native", "numpy")


@dataclass(frozen=True)
class HullConfig:
    """Settings of a :class:`ConvexHullIndex` (validated on construction).

    Attributes:
        k: the first working set is the ``min(k, 16)`` nearest points of the subsample; a
            working set keeps all its points up to ``max(4 d, 2 k)`` of them (k clipped to N).
        tol: target relative gap ``(upper - lower) / upper``, in (0, 1).
        atol: absolute distance below which a query counts as inside the hull, relative to the
            largest training-feature norm (>= 0).
        max_rounds: budget of full rounds (passes over all N points) per query (>= 1).
        add_per_round: violating points added to the working set per round (>= 1). 32 costs
            less than 64 (smaller working sets, cheaper QPs, a few more of them) on every case
            measured (``python bench/geometry.py``, "hull settings").
        time_budget_s: optional wall-clock budget (> 0 seconds) for the rounds of one block of
            queries; the bounds still hold when it runs out (``converged`` is then False).
        scan: how full rounds bound ``max_t g.t``: ``"exact"`` (the default: no memory beyond
            the features), ``"pca"`` (reads N x k principal coefficients instead of N x d and
            evaluates only the points their bound cannot exclude; holds those coefficients,
            k/d of the feature matrix more memory: on the default model 3% faster for +42%)
            or ``"auto"`` (pca where the features are low-rank enough).
        pca_k: principal directions of the PCA-bounded scan (>= 1, clipped to d; ``None``: the
            fewest leaving at most ``pca_residual`` of the variance).
        pca_residual: residual variance fraction targeted by the automatic ``pca_k``, in (0, 1).
        pool_size: points a full round hands to the inner rounds (>= 1; at least
            ``add_per_round`` are handed; up to twice as many when the estimated cut lets
            them through). Smaller pools make the inner rounds cheaper and full rounds a
            little more frequent; 1,024 costs less than 2,048 on the Fashion-MNIST models'
            raw and spherical hulls (``python bench/geometry.py``, "hull settings") and on 1M
            synthetic points.
        subsample: size (>= 1, clipped to N) of the random subsample the first inner rounds
            search (``None``: 2,048, all points when N is smaller). A larger first pool saves
            few full rounds and costs more than they do: 2,048 beat ``N / 16`` in [2,048,
            16,384] (and all points below 8,192) on two real models' raw and spherical hulls
            and on synthetic 200k and 1M points, at batch 1 and 64 (same benchmark).
        seed: seed (>= 0) of the subsample, of the training-point hash and of the PCA fit
            sample.
        engine: who runs the column generation of the exact scan: ``"auto"`` (the compiled
            core, :mod:`guard.geometry.native`, when it is built, else numpy with a warning),
            ``"native"`` (the compiled core or an error) or ``"numpy"`` (the numpy path; the
            PCA-bounded scan always runs it). Same certified bounds either way.
    """

    k: int = 64
    tol: float = 1e-3
    atol: float = 1e-7
    max_rounds: int = 100
    add_per_round: int = 32
    time_budget_s: float | None = None
    scan: str = "exact"
    pca_k: int | None = None
    pca_residual: float = 0.01
    pool_size: int = 1024
    subsample: int | None = None
    seed: int = 0
    engine: str = "auto"

    def __post_init__(self) -> None:
        self._integer("k", 1)
        self._integer("max_rounds", 1)
        self._integer("add_per_round", 1)
        self._integer("pool_size", 1)
        self._integer("seed", 0)
        self._integer("pca_k", 1, optional=True)
        self._integer("subsample", 1, optional=True)
        self._real("tol", "in (0, 1)", lambda x: 0 < x < 1)
        self._real("atol", "finite and >= 0", lambda x: 0 <= x < np.inf)
        self._real("time_budget_s", "> 0 seconds", lambda x: x > 0, optional=True)
        self._real("pca_residual", "in (0, 1)", lambda x: 0 < x < 1)
        if not isinstance(self.scan, str) or self.scan not in SCANS:
            raise GeometryError(f"HullConfig.scan must be one of {SCANS}, got {self.scan!r}")
        if not isinstance(self.engine, str) or self.engine not in ENGINES:
            raise GeometryError(f"HullConfig.engine must be one of {ENGINES}, got {self.engine!r}")

    # Settings are stored as plain Python int / float (numpy scalars are accepted), so a config
    # compares and serializes the same whatever built it.
    def _integer(self, name: str, low: int, optional: bool = False) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            also = " or None" if optional else ""
            raise GeometryError(
                f"HullConfig.{name} must be an integer >= {low}{also}, got {value!r}"
            )
        object.__setattr__(self, name, int(value))

    def _real(
        self, name: str, want: str, ok: Callable[[float], bool], optional: bool = False
    ) -> None:
        value = getattr(self, name)
        if value is None and optional:
            return
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not ok(float(value)):
            also = " or None" if optional else ""
            raise GeometryError(f"HullConfig.{name} must be a number {want}{also}, got {value!r}")
        object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class HullDistances:
    """Certified hull distances of N queries in d dimensions.

    Attributes:
        upper: (N,) ``||q - p||`` for a point ``p`` of the hull (the reported distance).
        lower: (N,) certified lower bound, ``0 <= lower <= true distance <= upper``.
        projection: (N, d) the point ``p`` (approximate projection of q onto the hull).
        support_idx: (N, K) training indices of the largest weights, -1 padded.
        support_alpha: (N, K) their convex weights (the full weight vector sums to 1).
        rounds: (N,) full rounds (passes over all N training points) used for the query.
        converged: (N,) whether the relative gap reached ``tol`` (or upper <= atol).
        qp_solves: (N,) small QPs solved (full plus inner rounds).
        exact_fraction: (N,) points evaluated exactly in the full rounds, as a fraction of
            ``N * rounds`` (1 for the exact scan; the candidates of the PCA-bounded scan).
    """

    upper: np.ndarray
    lower: np.ndarray
    projection: np.ndarray
    support_idx: np.ndarray
    support_alpha: np.ndarray
    rounds: np.ndarray
    converged: np.ndarray
    qp_solves: np.ndarray | None = None
    exact_fraction: np.ndarray | None = None
