"""Scores + thresholds -> abstain / flags, with the reasons.

* out of distribution: the conformal p-value of the combined OOD score
  (:mod:`guard.detectors.combined`) is below the target abstain rate; for a guard fitted
  without it (``ood=False``), the hull distance exceeds its calibrated threshold (first version);
* ambiguous: ``d_min - d_hull < thresholds.ambiguity`` (eq. 26; the paper uses 0) — reported;
  it makes the guard abstain only in the first version (without the combined score);
* adversarial: ``d_min`` is below the calibrated low percentile of clean margins.

The guard abstains when the input is out of distribution. ``flags`` is a bit mask.
"""

from __future__ import annotations

import numpy as np

from .calibrate import Thresholds
from .types import FLAG_ADVERSARIAL, FLAG_AMBIGUOUS, FLAG_OOD, Decisions, Scores


def decide(scores: Scores, thresholds: Thresholds) -> Decisions:
    t = thresholds
    ambiguous = scores.ambiguity < t.ambiguity
    combined = bool(np.isfinite(scores.p_value).all()) and t.target_abstain_rate is not None
    if combined:
        ood = scores.p_value < t.target_abstain_rate
    else:
        ood = scores.hull_upper > t.hull
    adversarial = scores.d_min < t.d_min
    flags = (FLAG_ADVERSARIAL * adversarial + FLAG_OOD * ood + FLAG_AMBIGUOUS * ambiguous).astype(
        np.int32
    )
    reasons: list[list[str]] = []
    for i in range(len(flags)):
        r = []
        if adversarial[i]:
            r.append(
                f"adversarial: margin {scores.d_min[i]:.4g} < {t.d_min:.4g} (the "
                f"{100 * (t.target_flag_rate or 0):g}% lowest clean margins)"
            )
        if ood[i] and combined:
            r.append(
                f"out of distribution: p-value {scores.p_value[i]:.3g} < "
                f"{t.target_abstain_rate:g} (OOD score {scores.ood_score[i]:.3g})"
            )
        elif ood[i]:
            r.append(
                f"out of distribution: hull distance {scores.hull_upper[i]:.4g} > "
                f"{t.hull:.4g} (calibrated at {100 * (t.target_abstain_rate or 0):g}%)"
            )
        if ambiguous[i]:
            r.append(
                f"ambiguous: margin {scores.d_min[i]:.4g} - hull distance "
                f"{scores.hull_upper[i]:.4g} < {t.ambiguity:g}"
            )
        reasons.append(r)
    abstain = ood if combined else ambiguous | ood
    return Decisions(abstain=abstain, adversarial=adversarial, flags=flags, reasons=reasons)
