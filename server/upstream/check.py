"""Is the model behind the proxy the artifact's model? The two checks of upstream mode.

* Every forwarded batch: the upstream's logits must equal ``features · Wᵀ + b`` with the
  artifact's final layer (paper eq. 4), image by image, to ``rtol`` of the image's largest
  logit magnitude (at least 1). A model with another head fails it; a model with the same head
  and another backbone does not (its logits are still an affine image of its features): that
  is what the reference check is for.
* At start, on a reload and at every readiness poll: the upstream's logits and features on the
  artifact's reference inputs (training images stored at fit time) must equal the stored ones to
  ``rtol`` of their largest magnitude (at least 1), as ``load_artifact`` checks an in-process
  model.

Rows with non-finite values are left to the pipeline (they fail their own request).
"""

from __future__ import annotations

import numpy as np

from guard import Guard

from ..errors import UpstreamMismatch

NOT_IT = "the model behind the proxy is not the one this artifact was fitted on"


def check_affine(guard: Guard, logits: np.ndarray, features: np.ndarray, rtol: float) -> None:
    """:class:`UpstreamMismatch` unless ``logits`` (B, n) == ``features`` (B, f) · Wᵀ + b."""
    n, f = guard.W_.shape
    if logits.ndim != 2 or logits.shape[1] != n or features.ndim != 2 or features.shape[1] != f:
        raise UpstreamMismatch(
            f"the upstream's logits have shape {list(logits.shape)} and its features "
            f"{list(features.shape)}; the artifact's model has {n} classes and {f} features: "
            f"{NOT_IT}"
        )
    ok = np.isfinite(logits).all(axis=1) & np.isfinite(features).all(axis=1)
    if not ok.any():
        return
    z = logits[ok].astype(np.float64)
    recon = features[ok].astype(np.float64) @ guard.W_.T + guard.b_
    scale = np.maximum(1.0, np.abs(z).max(axis=1))
    err = np.abs(recon - z).max(axis=1) / scale
    worst = int(np.argmax(err))
    if not err[worst] <= rtol:
        raise UpstreamMismatch(
            f"the upstream's logits differ from W·features + b of the artifact by "
            f"{err[worst]:.2e} (relative, allowed {rtol:.0e}, upstream_rtol) on "
            f"{int(np.count_nonzero(err > rtol))} of {len(err)} images: {NOT_IT}"
        )


def check_reference(guard: Guard, logits: np.ndarray, features: np.ndarray, rtol: float) -> None:
    """:class:`UpstreamMismatch` unless the upstream's outputs on the reference inputs equal the
    stored ones: both shapes first, then the features (another backbone), then the logits
    (another head)."""
    pairs = (
        ("logits", logits, guard.reference_logits_),
        ("features", features, guard.reference_features_),
    )
    for name, got, want in pairs:
        if want is None:
            raise UpstreamMismatch(
                "the artifact has no reference inputs (fitted from features): it cannot check "
                "an upstream model; refit it with `guard fit --model ...`"
            )
        if got.shape != want.shape:
            raise UpstreamMismatch(
                f"the upstream's {name} on the {len(want)} reference inputs have shape "
                f"{list(got.shape)}, the artifact's {list(want.shape)}: {NOT_IT}"
            )
    for name, got, want in reversed(pairs):
        assert want is not None  # checked above
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        err = float(diff.max() / max(1.0, float(np.abs(want).max())))
        if not err <= rtol:
            raise UpstreamMismatch(
                f"the upstream's {name} on the {len(want)} reference inputs differ from the "
                f"artifact's by {err:.1e} of their largest magnitude (allowed {rtol:.0e}, "
                f"upstream_rtol): {NOT_IT}"
            )
