"""Back to pixels: images that map to given points and regions of the feature space (paper
sections 4-5, eq. 15-19) and the paper's section 7.1 for one image (``guard explain``).

* :mod:`.targets`: where the features must land (a point, a ball, its perimeter); numpy only.
* :mod:`.solver`: :func:`invert`, the augmented-Lagrangian pre-image solver (torch inside); the
  problem of one start and its settings in :mod:`.problem`, the method of multipliers in
  :mod:`.augmented`.
* :mod:`.explain`: :func:`explain`, the flip-point, hull, perimeter and morph pre-images of one
  input; :mod:`.render` and :mod:`.figures` write them; :mod:`.projection` draws paths.
* :mod:`.cli`: the ``guard explain`` command.

torch is optional (``pip install 'guard-classifier[torch]'``): this package imports it only when
a name that needs it is used, so ``import guard.inversion`` works without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .targets import BallTarget, PointTarget

__all__ = [
    "BallTarget",
    "ExplainConfig",
    "Explanation",
    "Inversion",
    "PointTarget",
    "SolverConfig",
    "explain",
    "invert",
    "write_explanation",
]

_LAZY = {
    "Inversion": "solver",
    "SolverConfig": "solver",
    "invert": "solver",
    "ExplainConfig": "explain",
    "Explanation": "explain",
    "explain": "explain",
    "write_explanation": "render",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ImportError(
            f"guard.inversion.{name} needs torch: pip install 'guard-classifier[torch]'"
        ) from None
    return getattr(module, name)
