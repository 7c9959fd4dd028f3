"""The spherical hull distance as Open Inference Protocol outputs (``sphere_distance``,
``sphere_lower``): sent when asked for, FP32 [B], the guard's certified bounds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from guard import Guard
from server.dataplane.outputs import DEFAULT_OUTPUTS, OUTPUTS, available, output_tensors


def test_sphere_outputs_are_the_guards_bounds() -> None:
    rng = np.random.default_rng(0)
    F = np.maximum(rng.normal(size=(300, 16)), 0).astype(np.float32)
    W, b = rng.normal(size=(3, 16)), rng.normal(size=3)
    g = Guard(calib_fraction=0, ood=False).fit_features(F, W, b)
    q = np.maximum(rng.normal(size=(5, 16)), 0).astype(np.float32)
    s = g.score_features(q)
    result = SimpleNamespace(scores=s)
    out = {t.name: t for t in output_tensors(["sphere_distance", "sphere_lower"], result)}
    assert out["sphere_distance"].datatype == out["sphere_lower"].datatype == "FP32"
    np.testing.assert_array_equal(out["sphere_distance"].data, s.sphere_upper.astype("<f4"))
    np.testing.assert_array_equal(out["sphere_lower"].data, s.sphere_lower.astype("<f4"))
    assert out["sphere_distance"].data.shape == (5,)
    assert np.all(out["sphere_lower"].data <= out["sphere_distance"].data)


def test_sphere_outputs_on_request_only_and_need_the_geometry() -> None:
    for name in ("sphere_distance", "sphere_lower"):
        assert name in OUTPUTS and OUTPUTS[name].geometry
        assert name not in DEFAULT_OUTPUTS
        assert name in available(True) and name not in available(False)
