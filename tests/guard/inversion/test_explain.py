"""``guard explain`` end to end on a tiny model (6x6 inputs, 8 ReLU features, 5 classes), and the
two-point equidistant projection against its defining property.

Every number of ``explain.json`` is checked against an independent computation: the saved
``.npy`` pixels are run through onnxruntime again, residuals recomputed from the targets
(the exact flip point from the geometry, the ball from the input's features), and the morph's
classes compared with the input's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from guard import Guard  # noqa: E402
from guard.artifact import save_artifact  # noqa: E402
from guard.cli import main  # noqa: E402
from guard.geometry.margins import compute_margins  # noqa: E402
from guard.inversion.projection import project_path, two_point_equidistant  # noqa: E402
from guard.model import OnnxClassifier  # noqa: E402
from tests.guard import onnx_builders as ob  # noqa: E402


def test_two_point_equidistant_keeps_both_distances() -> None:
    rng = np.random.default_rng(0)
    P = rng.standard_normal((50, 64))
    a, b = rng.standard_normal(64), rng.standard_normal(64)
    uv = two_point_equidistant(P, a, b)
    A, B = np.zeros(2), np.array([np.linalg.norm(a - b), 0.0])
    np.testing.assert_allclose(np.linalg.norm(uv - A, axis=1), np.linalg.norm(P - a, axis=1))
    np.testing.assert_allclose(np.linalg.norm(uv - B, axis=1), np.linalg.norm(P - b, axis=1))
    # points on the segment a-b land on the axis, in order
    s = np.linspace(0, 1, 7)[:, None]
    seg = two_point_equidistant((1 - s) * a + s * b, a, b)
    np.testing.assert_allclose(seg[:, 1], 0, atol=1e-6)
    np.testing.assert_allclose(seg[:, 0], s[:, 0] * np.linalg.norm(a - b), atol=1e-9)
    path = project_path(P[:10], a, b)
    np.testing.assert_allclose(np.abs(path), np.abs(uv[:10]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("explain")
    built = ob.gemm_transb1(seed=3)
    model = OnnxClassifier(built.data)
    x = ob.random_inputs(400, seed=5)
    guard = Guard(calib_fraction=0, ood=False).fit(model, x)
    art = save_artifact(guard, d / "artifact")
    np.savez(d / "train.npz", x=x)
    # input 1: one with a training image of its class well inside B(x_phi) (for the morph)
    cand = ob.random_inputs(200, seed=6)
    s = guard.score(cand)
    F = guard.train_features_.astype(np.float64)
    feats = model.run(cand)[1].astype(np.float64)
    for k in range(len(cand)):
        dist = np.linalg.norm(F - feats[k], axis=1)
        r = s.d_min[k]
        ok = (guard.train_pred_ == s.pred[k]) & (dist > 0.3 * r) & (dist < 0.8 * r)
        if ok.any():
            break
    else:
        raise AssertionError("no test input with a training image inside its ball")
    np.savez(d / "x.npz", x=np.stack([cand[(k + 1) % 200], cand[k], cand[(k + 2) % 200]]))
    return {"dir": d, "artifact": art, "train": d / "train.npz", "x": d / "x.npz"}


def test_guard_explain_end_to_end(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = tiny["dir"] / "out"
    rc = main(
        [
            "explain",
            "--artifact", str(tiny["artifact"]),
            "--input", str(tiny["x"]),
            "--index", "1",
            "--train", str(tiny["train"]),
            "--out", str(out),
            "--n-perimeter", "2",
            "--n-morph", "2",
            "--time-budget-s", "120",
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    doc = json.loads((out / "explain.json").read_text())
    md = (out / "explain.md").read_text()
    assert "Table 1" in md and "![flip](../out/fig3_flip.png)" in md
    model = OnnxClassifier(ob.gemm_transb1(seed=3).data)
    x = np.load(tiny["x"])["x"][1]
    z0, f0 = model.run(x[None])
    m = compute_margins(f0, model.W, model.b, True)
    pred = int(m.pred[0])
    assert doc["pred"] == pred
    np.testing.assert_allclose(doc["table1"]["d_min"], m.d_min[0], rtol=1e-9)
    solves = doc["solves"]
    targets = [s["target"] for s in solves]
    assert targets.count("flip") == 2 and "hull" in targets
    assert targets.count("perimeter") == 2 and targets.count("morph") == 2
    keys = {
        "target", "feature_residual", "start_residual", "pixel_distance", "met",
        "predicted_class", "image",
    }  # fmt: skip
    for s in solves:
        assert keys <= set(s)
        img = np.load(out / s["image"])
        assert img.shape == x.shape and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1
        z, f = model.run(img[None])
        assert s["predicted_class"] == int(np.argmax(z[0]))
        ref = {
            "perimeter_black": np.zeros_like(x),
            "perimeter_white": np.ones_like(x),
        }.get(s["name"], _train(tiny, doc["morph_index"]) if s["target"] == "morph" else x)
        dist = np.linalg.norm(img.astype(np.float64) - ref.astype(np.float64))
        assert s["pixel_distance"] == pytest.approx(dist, rel=1e-6)
        assert s["met"] == (s["feature_residual"] <= s["tolerance"])
        if s["name"] == "flip":
            resid = np.linalg.norm(f[0].astype(np.float64) - m.flip_point[0])
            assert s["feature_residual"] == pytest.approx(resid, rel=1e-6, abs=1e-9)
            assert s["start_residual"] == pytest.approx(m.d_min[0], rel=1e-5)
        if s["target"] == "perimeter":
            d = np.linalg.norm(f[0].astype(np.float64) - f0[0])
            assert s["feature_residual"] == pytest.approx(abs(d - m.d_min[0]), abs=1e-6)
        if s["target"] == "flip":
            assert s["on_boundary"] == s["met"]
    # the acceptance on this model: every pre-image met, the morph keeps the class
    assert all(s["met"] for s in solves), [s["message"] for s in solves if not s["met"]]
    assert all(s["predicted_class"] == pred for s in solves if s["target"] == "morph")
    for name in ("fig3_flip.png", "fig5_hull.png", "fig6_support.png", "fig7_perimeter.png",
                 "fig8_morph.png", "fig9_path.png", "flip.png", "input.npy"):  # fmt: skip
        assert (out / name).is_file(), name


def _train(tiny: dict[str, Path], t: int) -> np.ndarray:
    return np.load(tiny["train"])["x"][t]


def test_explain_without_training_data_and_with_a_tiny_budget(tiny: dict[str, Path]) -> None:
    out = tiny["dir"] / "budget"
    rc = main(
        ["explain", "--artifact", str(tiny["artifact"]), "--input", str(tiny["x"]),
         "--no-train", "--out", str(out), "--time-budget-s", "0.01", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "explain.json").read_text())
    assert len(doc["solves"]) <= 1  # the budget ran out during the first solve
    assert any("time budget" in n for n in doc["notes"])
    assert any("no training images" in n for n in doc["notes"])


def test_explain_refuses_bad_input(tiny: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    base = ["explain", "--artifact", str(tiny["artifact"]), "--input", str(tiny["x"]),
            "--no-train", "--out", str(tiny["dir"] / "bad"), "--no-progress"]  # fmt: skip
    assert main([*base, "--index", "7"]) == 2
    assert "--index 7 is outside the 3 inputs" in capsys.readouterr().err
    assert main([*base, "--domain", "1,0"]) == 2
    assert "expected LO < HI" in capsys.readouterr().err
    assert main([*base, "--domain", "0.2,0.3"]) == 2
    assert "outside the domain" in capsys.readouterr().err
    wrong_train = [
        *("explain", "--artifact", str(tiny["artifact"]), "--input", str(tiny["x"])),
        *("--train", str(tiny["x"]), "--out", str(tiny["dir"] / "b2"), "--no-progress"),
    ]
    assert main(wrong_train) == 2  # 3 inputs, not the 400 the artifact was fitted on
    assert "fitted on at least" in capsys.readouterr().err
