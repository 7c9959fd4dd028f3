"""Scores read off the guard's geometry: the certified distance to the convex hull of the
training features (eq. 20-25 of the paper) and the paper's raw ambiguity (eq. 26) as an outlier
score.

They compute nothing themselves: the geometry comes in as :class:`~.base.Evidence` (``hull`` =
``Scores.hull_upper``, ``d_min`` = ``Scores.d_min``), built by whoever owns the fitted
:class:`~guard.estimator.Guard` (``Evidence.from_scores(guard.score_features(x), x)``): the
expensive hull and margin solves run once per input, however many scores read them.
"""

from __future__ import annotations

import numpy as np

from .base import Detector, Evidence

__all__ = ["Ambiguity", "HullDistance"]


class HullDistance(Detector):
    """The certified distance to the training hull (its upper bound), as it is."""

    name = "hull"
    needs = ("hull",)

    def _score(self, ev: Evidence) -> np.ndarray:
        return self._read(ev, "hull").copy()


class Ambiguity(Detector):
    """The paper's raw ambiguity ``d_min - d_hull`` negated: ``d_hull - d_min``.

    Negative ambiguity (the hull farther than the nearest boundary) = ambiguous; the paper
    abstains below 0, i.e. where this score is above 0.
    """

    name = "ambiguity"
    needs = ("hull", "d_min")

    def _score(self, ev: Evidence) -> np.ndarray:
        return self._read(ev, "hull") - self._read(ev, "d_min")
