"""Smoke test of bench/hull.py's per-size row (this version vs the frozen previous version) on a
small synthetic set. No timing is asserted."""

from __future__ import annotations

from bench import hull


def test_hull_row_compares_with_previous_version() -> None:
    T, Q = hull.synthetic(3000, 16, 6)
    r, res = hull.row("synthetic ReLU mixture", T, Q, 3)
    assert r["N"] == 3000 and r["d"] == 16 and r["queries"] == 6
    assert r["intervals overlap"] == "yes"
    assert r["converged"] == "100%"
    assert r["speedup p50 (previous / this)"] > 0
    assert 0 < r["exactly evaluated (median, of N per full round)"] <= 1.5
    assert r["gap_max"] <= 1e-3
    assert {"median", "min", "max", "n", "p99"} <= set(r["previous_latency_ms"])
    assert (res.lower <= res.upper).all()
