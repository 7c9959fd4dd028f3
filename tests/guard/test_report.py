"""Tests of ``guard report``: a full report on a small ONNX model through the CLI, its numbers
checked against direct computations, its pieces against brute force, and its user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from guard.artifact import load_artifact
from guard.cli import main
from guard.evaluation.report.facts import pixel_hull, same_label_share

from . import onnx_builders as ob

N_TRAIN, N_TEST = 900, 120


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("report")
    built = ob.gemm_transb1(seed=3)
    (d / "model.onnx").write_bytes(built.data)
    x = ob.random_inputs(N_TRAIN + N_TEST, seed=31)
    y = built.logits(x).argmax(1)
    flip = np.random.default_rng(32).random(len(y)) < 0.1  # some label noise: errors exist
    y = np.where(flip, (y + 1) % ob.N_CLASSES, y)
    np.savez(d / "train.npz", x=x[:N_TRAIN], y=y[:N_TRAIN])
    np.savez(d / "test.npz", x=x[N_TRAIN:], y=y[N_TRAIN:])
    np.savez(d / "far.npz", x=(4.0 * ob.random_inputs(200, seed=33)).astype(np.float32))
    np.savez(d / "shuffled.npz", x=x[:N_TRAIN][::-1].copy(), y=y[:N_TRAIN][::-1].copy())
    (d / "extra.md").write_text("# Extra evaluation\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert (
        main(
            [
                "fit",
                "--model",
                str(d / "model.onnx"),
                "--train",
                str(d / "train.npz"),
                "--out",
                str(d / "art"),
                "--calib-fraction",
                "0.3",
                "--no-progress",
            ]
        )
        == 0
    )
    return {p.stem: p for p in d.iterdir()} | {"dir": d}


@pytest.fixture(scope="module")
def report(files: dict[str, Path]) -> Path:
    out = files["dir"] / "out"
    rc = main(
        [
            "report",
            "--artifact",
            str(files["art"]),
            "--out",
            str(out),
            "--train",
            str(files["train"]),
            "--test",
            str(files["test"]),
            "--ood",
            f"far={files['far']}",
            "--n-calib",
            "150",
            "--n-pixel",
            "25",
            "--include",
            str(files["extra"]),
            "--no-progress",
        ]
    )
    assert rc == 0
    return out


def test_report_writes_markdown_json_and_figures(report: Path) -> None:
    md = (report / "report.md").read_text()
    for heading in (
        "## Headline",
        "## 1. Where inputs lie",
        "## 2. Ambiguity",
        "## 3. Distance to every decision boundary",
        "## 4. What supports",
        "## 5. Out-of-distribution detection",
        "## 6. Included",
        "### Extra evaluation",
    ):
        assert heading in md, heading
    doc = json.loads((report / "report.json").read_text())
    assert set(doc["figures"]) == {"distances", "ambiguity", "plane", "extremes", "support"}
    for name in doc["figures"].values():
        assert f"]({name})" in md
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in (
        "MSP",
        "Energy",
        "Mahalanobis",
        "deep-kNN (k=50)",
        "ViM",
        "fDBD",
        "guard (combined)",
    ):
        assert f"| {method} |" in md or f"| **{method}** |" in md, method


def test_report_numbers_match_direct_computation(files: dict[str, Path], report: Path) -> None:
    doc = json.loads((report / "report.json").read_text())
    guard = load_artifact(files["art"])
    test = np.load(files["test"])
    s = guard.score(test["x"])
    f = doc["facts"]["test"]
    assert f["n"] == N_TEST
    assert f["accuracy"] == pytest.approx(np.mean(s.pred == test["y"]))
    assert f["outside_hull"] == pytest.approx(np.mean(s.hull_lower > 0))
    assert f["hull_closer"] == pytest.approx(np.mean(s.hull_upper < s.d_min))
    assert f["in_union"] == pytest.approx(np.mean(s.in_union))
    assert f["median_d_min"] == pytest.approx(np.median(s.d_min))
    d = doc["decisions"]["test"]
    assert d["abstain"] == pytest.approx(np.mean(guard.decide(s).abstain))
    t1 = doc["table1"]
    np.testing.assert_allclose(np.array(t1["margins"], dtype=float), s.margins[0])
    # closed form = hyperplane distance, recomputed here; a lower bound of the exact margin
    feats = guard.model_.run(test["x"][:1])[1][0].astype(np.float64)
    p = t1["pred"]
    for j in range(ob.N_CLASSES):
        if j == p:
            continue
        w = guard.W_[p] - guard.W_[j]
        hyper = (w @ feats + guard.b_[p] - guard.b_[j]) / np.linalg.norm(w)
        assert t1["closed_form"][j] == pytest.approx(hyper, rel=1e-9)
        assert t1["closed_form"][j] <= t1["margins"][j] + 1e-9
    dist = np.linalg.norm(guard.train_features_.astype(np.float64) - feats, axis=1)
    assert t1["train_in_ball"] == int(np.sum(dist < t1["d_min"]))
    y_train = np.load(files["train"])["y"]
    want = same_label_share(s.support_idx, s.support_alpha, y_train, test["y"])
    assert doc["support"]["feature_all"] == pytest.approx(want)
    # the peers' table: guard's AUROC on "far" recomputed from the scores
    from guard.evaluation.metrics import auroc

    far = np.load(files["far"])["x"]
    s_far = guard.score(far)
    assert doc["ood"]["combined"]["far"]["auroc"] == pytest.approx(
        auroc(s.ood_score, s_far.ood_score)
    )


def test_same_label_share_against_a_loop() -> None:
    rng = np.random.default_rng(0)
    y_train = rng.integers(0, 3, 50)
    idx = rng.integers(-1, 50, (20, 6))
    alpha = rng.random((20, 6))
    yq = rng.integers(0, 3, 20)
    got = same_label_share(idx, alpha, y_train, yq, top=4)
    w_share, hits, seen = [], 0, 0
    for i in range(20):
        num = sum(alpha[i, c] for c in range(6) if idx[i, c] >= 0 and y_train[idx[i, c]] == yq[i])
        den = sum(alpha[i, c] for c in range(6) if idx[i, c] >= 0)
        w_share.append(num / den if den else 0.0)
        for c in range(4):
            if idx[i, c] >= 0:
                seen += 1
                hits += int(y_train[idx[i, c]] == yq[i])
    assert got["weighted"] == pytest.approx(np.mean(w_share))
    assert got["top4"] == pytest.approx(hits / seen)


def test_pixel_hull_inside_and_outside() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((40, 1, 4, 4)).astype(np.float32)
    inside = (0.5 * x[3] + 0.5 * x[7])[None]
    outside = (x.max(axis=0) + 1.0)[None]  # beyond every training pixel
    h = pixel_hull(x, np.concatenate([x[:1], inside, outside]))
    assert h.upper[0] == pytest.approx(0.0, abs=1e-5) and h.upper[1] == pytest.approx(0.0, abs=1e-5)
    # outside: each pixel exceeds every training value by >= 1, so distance >= sqrt(16) = 4
    assert h.lower[2] >= 4.0 - 1e-6 and h.lower[2] <= h.upper[2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train", "{train}"], "pass both --train"),
        (["--train", "{shuffled}", "--test", "{test}"], "not the data this artifact was fitted on"),
        (["--train", "{train}", "--test", "{test}", "--ood", "far"], "NAME=PATH"),
        (
            ["--train", "{train}", "--test", "{test}", "--include", "{dir}/missing.md"],
            "file not found",
        ),
    ],
)
def test_report_user_errors(
    files: dict[str, Path], capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    rc = main(
        [
            "report",
            "--artifact",
            str(files["art"]),
            "--out",
            str(files["dir"] / "bad"),
            "--no-progress",
            *args,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --------------------------------------------------------------------------- image layouts
@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((5, 1, 28, 28), "NCHW"),
        ((5, 3, 32, 32), "NCHW"),
        ((5, 28, 28, 1), "NHWC"),
        ((5, 32, 32, 3), "NHWC"),
        ((5, 28, 28), "NHW"),
        ((5, 3, 8, 3), "NCHW"),  # both ends could be channels: channels first wins
        ((5, 36), None),
        ((5, 4, 8, 8), None),
        ((5, 8, 8, 5), None),
        ((5, 1, 2, 3, 4), None),
    ],
)
def test_image_layout(shape: tuple[int, ...], layout: str | None) -> None:
    from guard.evaluation.report import figures

    assert figures.image_layout(shape) == layout
    assert figures.can_show(np.zeros(shape)) == (layout is not None)
    reason = figures.why_not_images(shape)
    assert (reason is None) == (layout is not None)
    if reason is not None:
        assert str(shape[1:]) in reason and "N×H×W×C" in reason


@pytest.mark.parametrize("channels", [1, 3])
def test_figures_draw_nhwc_as_nchw(tmp_path: Path, channels: int) -> None:
    """The same images as N×C×H×W and N×H×W×C give the same pixels in the figures."""
    import matplotlib.image as mpimg

    from guard.evaluation.report import figures

    rng = np.random.default_rng(channels)
    nchw = rng.random((6, channels, 10, 12)).astype(np.float32)
    nchw[:, :, :5] *= 0.2  # structure that a wrong transpose would scramble
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    titles = [f"#{i}" for i in range(6)]
    order = np.arange(6)
    a = figures.extremes(nchw, titles, order, 3, tmp_path / "a.png")
    b = figures.extremes(nhwc, titles, order, 3, tmp_path / "b.png")
    np.testing.assert_array_equal(mpimg.imread(tmp_path / a), mpimg.imread(tmp_path / b))
    rows = [
        {
            "image": x[0],
            "title": "t",
            "feature": [(x[1], "f1"), (x[2], "f2")],
            "pixel": [(x[3], "p1")],
        }
        for x in (nchw, nhwc)
    ]
    a = figures.support(rows[:1], tmp_path / "sa.png")
    b = figures.support(rows[1:], tmp_path / "sb.png")
    np.testing.assert_array_equal(mpimg.imread(tmp_path / a), mpimg.imread(tmp_path / b))
    # and a transposed drawing really differs (the test would notice a wrong layout)
    c = figures.extremes(nchw.transpose(0, 1, 3, 2), titles, order, 3, tmp_path / "c.png")
    assert not np.array_equal(mpimg.imread(tmp_path / a), mpimg.imread(tmp_path / c))


def _small_report(d: Path, data: bytes, shape: tuple[int, ...]) -> tuple[dict, str]:
    """Fit and report a 6x6 model whose input is declared with ``shape`` (per image)."""
    n_train, n_test = 300, 40
    model = ob.with_input_shape(data, ["N", *shape])
    (d / "m.onnx").write_bytes(model)
    x = ob.random_inputs(n_train + n_test, seed=41).reshape(-1, *shape)
    y = np.arange(len(x)) % ob.N_CLASSES
    np.savez(d / "train.npz", x=x[:n_train], y=y[:n_train])
    np.savez(d / "test.npz", x=x[n_train:], y=y[n_train:])
    fit = ["fit", "--model", d / "m.onnx", "--train", d / "train.npz", "--out", d / "art"]
    assert main([str(a) for a in [*fit, "--calib-fraction", "0.4", "--no-progress"]]) == 0
    rep = ["report", "--artifact", d / "art", "--out", d / "out", "--train", d / "train.npz"]
    rep += ["--test", d / "test.npz", "--n-calib", "100", "--n-pixel", "10", "--no-progress"]
    assert main([str(a) for a in rep]) == 0
    doc = json.loads((d / "out" / "report.json").read_text())
    return doc, (d / "out" / "report.md").read_text()


def test_report_on_nhwc_images_has_the_image_figures(tmp_path: Path) -> None:
    doc, md = _small_report(tmp_path, ob.gemm_transb1(seed=3).data, (6, 6, 1))
    assert {"extremes", "support"} <= set(doc["figures"])
    assert "](extremes.png)" in md and "](support.png)" in md
    assert not doc.get("figures_left_out")


def test_report_says_why_image_figures_are_left_out(tmp_path: Path) -> None:
    doc, md = _small_report(tmp_path, ob.gemm_transb1(seed=3).data, (36,))
    assert not {"extremes", "support"} & set(doc["figures"])
    left_out = doc["figures_left_out"]
    assert set(left_out) == {"extremes", "support"}
    assert "(36,)" in left_out["extremes"] and "N×H×W×C" in left_out["extremes"]
    assert "left out" in md and "(36,)" in md
