"""Tests of the command line (``guard fit | score | info``), run in-process through ``main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from guard.artifact import read_manifest, save_artifact
from guard.cli import main
from guard.estimator import Guard
from guard.model import OnnxClassifier

from . import onnx_builders as ob

SEED = 2
N_TRAIN = 150
N_TEST = 20
K_SUPPORT = 8  # default --top-support
DOCUMENTED = {
    # name: (shape as a function of (N, n, f, K), dtype kind)
    "pred": (lambda N, n, K: (N,), "i"),
    "logits": (lambda N, n, K: (N, n), "f"),
    "margins": (lambda N, n, K: (N, n), "f"),
    "d_min": (lambda N, n, K: (N,), "f"),
    "nearest_class": (lambda N, n, K: (N,), "i"),
    "hull_upper": (lambda N, n, K: (N,), "f"),
    "hull_lower": (lambda N, n, K: (N,), "f"),
    "ambiguity": (lambda N, n, K: (N,), "f"),
    "in_union": (lambda N, n, K: (N,), "b"),
    "n_balls": (lambda N, n, K: (N,), "i"),
    "union_slack": (lambda N, n, K: (N,), "f"),
    "support_idx": (lambda N, n, K: (N, K), "i"),
    "support_alpha": (lambda N, n, K: (N, K), "f"),
}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def built() -> ob.Built:
    return ob.gemm_transb1(seed=SEED)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, built: ob.Built) -> dict[str, Path]:
    """Model, training set and test sets on disk, plus an artifact fitted through the CLI."""
    d = tmp_path_factory.mktemp("cli")
    model = d / "model.onnx"
    model.write_bytes(built.data)
    x_train = ob.random_inputs(N_TRAIN, seed=21)
    y_train = np.random.default_rng(22).integers(0, ob.N_CLASSES, size=N_TRAIN)
    np.savez(d / "train.npz", x=x_train, y=y_train)
    x_test = np.concatenate([x_train[:5], ob.random_inputs(N_TEST - 5, seed=23)])
    np.savez(d / "test.npz", x=x_test)
    feats = OnnxClassifier(built.data).run(x_test)[1]
    np.savez(d / "feats.npz", f=feats)
    art = d / "art"
    rc = main(
        [
            "fit",
            "--model",
            str(model),
            "--train",
            str(d / "train.npz"),
            "--out",
            str(art),
            "--class-names",
            "a,b,c,d,e",
            "--calib-fraction",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    return {
        "dir": d,
        "model": model,
        "train": d / "train.npz",
        "test": d / "test.npz",
        "feats": d / "feats.npz",
        "art": art,
    }


def _run(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _score(capsys, files, out: Path, *src: str) -> dict[str, np.ndarray]:
    rc, stdout, stderr = _run(
        capsys, ["score", "--artifact", files["art"], *src, "--out", out, "--no-progress"]
    )
    assert rc == 0, stderr
    assert stderr == ""
    assert "scored" in stdout and str(out) in stdout
    with np.load(out, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _check_scores(res: dict[str, np.ndarray], N: int) -> None:
    n = ob.N_CLASSES
    for name, (shape, kind) in DOCUMENTED.items():
        assert name in res, f"missing array {name}"
        assert res[name].shape == shape(N, n, K_SUPPORT), name
        assert res[name].dtype.kind == kind, (name, res[name].dtype)
    rows = np.arange(N)
    np.testing.assert_array_equal(res["pred"], res["logits"].argmax(axis=1))
    assert np.isnan(res["margins"][rows, res["pred"]]).all()
    assert np.isnan(res["margins"]).sum() == N
    np.testing.assert_allclose(res["d_min"], np.nanmin(res["margins"], axis=1))
    np.testing.assert_array_equal(res["nearest_class"], np.nanargmin(res["margins"], axis=1))
    assert (res["hull_lower"] <= res["hull_upper"] + 1e-12).all()
    assert (res["hull_lower"] >= 0).all()
    np.testing.assert_allclose(res["ambiguity"], res["d_min"] - res["hull_upper"])
    np.testing.assert_array_equal(res["in_union"], res["n_balls"] > 0)
    np.testing.assert_array_equal(res["in_union"], res["union_slack"] > 0)
    idx, alpha = res["support_idx"], res["support_alpha"]
    assert ((idx >= -1) & (idx < N_TRAIN)).all()
    np.testing.assert_array_equal(idx == -1, alpha == 0)
    assert (alpha >= 0).all() and (alpha.sum(axis=1) <= 1 + 1e-9).all()


# --------------------------------------------------------------------------- happy paths
def test_fit_writes_artifact(files, capsys, tmp_path: Path) -> None:
    m = read_manifest(files["art"])
    assert m["fitted"]["class_names"] == list("abcde")
    assert m["n_features"] == ob.N_FEATURES and m["n_classes"] == ob.N_CLASSES
    assert m["counts"]["n_train"] == N_TRAIN and m["counts"]["n_labelled"] == N_TRAIN

    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\n\nthree\nfour\nfive\n")
    out = tmp_path / "art2"
    rc, stdout, stderr = _run(
        capsys,
        [
            "fit",
            "--model",
            files["model"],
            "--train",
            files["train"],
            "--out",
            out,
            "--limit",
            40,
            "--class-names",
            names,
            "--calib-fraction",
            0,
            "--nonneg",
            "yes",
            "--no-progress",
        ],
    )
    assert rc == 0, stderr
    assert stderr == ""
    assert "fitted 40 training inputs" in stdout and "artifact written to" in stdout
    m = read_manifest(out)
    assert m["counts"]["n_train"] == 40 and m["counts"]["n_labelled"] == 40
    assert m["fitted"]["class_names"] == ["one", "two", "three", "four", "five"]
    assert m["fitted"]["nonneg"] is True and m["params"]["nonneg"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art2", "names.txt"]


def test_info_prints_manifest(files, capsys) -> None:
    rc, stdout, stderr = _run(capsys, ["info", "--artifact", files["art"]])
    assert rc == 0 and stderr == ""
    assert json.loads(stdout) == read_manifest(files["art"])


def test_score_input_and_features(files, capsys, tmp_path: Path) -> None:
    by_input = _score(capsys, files, tmp_path / "a.npz", "--input", files["test"])
    _check_scores(by_input, N_TEST)
    by_feats = _score(capsys, files, tmp_path / "b.npz", "--features", files["feats"])
    _check_scores(by_feats, N_TEST)
    assert by_input.keys() == by_feats.keys()
    for name in by_input:
        if name == "logits":  # from the model vs. recomputed from the features
            np.testing.assert_allclose(by_input[name], by_feats[name], rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(by_input[name], by_feats[name], err_msg=name)
    # The first five test inputs are training inputs: in the hull and (typically) the union.
    assert (by_input["hull_upper"][:5] <= 1e-6).all()
    assert by_input["in_union"][:5].any()


def test_score_same_for_any_n_jobs(files, capsys, tmp_path: Path) -> None:
    one = _score(capsys, files, tmp_path / "a.npz", "--input", files["test"], "--n-jobs", "1")
    every = _score(capsys, files, tmp_path / "b.npz", "--input", files["test"], "--n-jobs", "-1")
    for name in one:
        np.testing.assert_array_equal(one[name], every[name], err_msg=name)


def test_score_uint8_input(files, capsys, tmp_path: Path) -> None:
    u8 = np.random.default_rng(24).integers(0, 256, size=(7, *ob.INPUT_SHAPE), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=u8)
    np.savez(tmp_path / "f32.npz", x=u8.astype(np.float32) / 255.0)
    a = _score(capsys, files, tmp_path / "a.npz", "--input", tmp_path / "u8.npz")
    _check_scores(a, 7)
    b = _score(capsys, files, tmp_path / "b.npz", "--input", tmp_path / "f32.npz")
    np.testing.assert_array_equal(a["pred"], b["pred"])
    np.testing.assert_allclose(a["d_min"], b["d_min"], rtol=1e-5, atol=1e-6)


def test_score_top_support_and_model_check(files, capsys, tmp_path: Path) -> None:
    rc, _, stderr = _run(
        capsys,
        [
            "score",
            "--artifact",
            files["art"],
            "--input",
            files["test"],
            "--model",
            files["model"],
            "--top-support",
            3,
            "--out",
            tmp_path / "sub" / "s.npz",
            "--no-progress",
        ],
    )
    assert rc == 0, stderr
    with np.load(tmp_path / "sub" / "s.npz", allow_pickle=False) as data:
        assert data["support_idx"].shape == (N_TEST, 3)
        assert data["support_alpha"].shape == (N_TEST, 3)


def test_score_out_is_written_where_asked(files, capsys, tmp_path: Path) -> None:
    out = tmp_path / "scores"  # no .npz suffix: the file must still be exactly this path
    rc, stdout, stderr = _run(
        capsys,
        [
            "score",
            "--artifact",
            files["art"],
            "--features",
            files["feats"],
            "--out",
            out,
            "--no-progress",
        ],
    )
    assert rc == 0, stderr
    assert out.is_file() and f"scores written to {out}" in stdout
    with np.load(out, allow_pickle=False) as data:
        assert data["pred"].shape == (N_TEST,)


# --------------------------------------------------------------------------- user errors
def _expect_error(capsys, argv: list, *needles: str) -> str:
    rc, _, err = _run(capsys, argv)
    assert rc == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("guard: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _score_args(files, src: str, path) -> list:
    return ["score", "--artifact", files["art"], src, path, "--out", files["dir"] / "o.npz"]


def test_error_missing_file(files, capsys, tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    _expect_error(capsys, _score_args(files, "--input", missing), "not found", str(missing))
    _expect_error(
        capsys,
        ["fit", "--model", files["model"], "--train", missing, "--out", tmp_path / "art"],
        "not found",
    )
    _expect_error(
        capsys,
        [
            "fit",
            "--model",
            tmp_path / "none.onnx",
            "--train",
            files["train"],
            "--out",
            tmp_path / "art",
        ],
        "model file not found",
    )
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("kind", ["text", "npy", "truncated-zip"])
def test_error_not_an_npz(files, capsys, tmp_path: Path, kind: str) -> None:
    bad = tmp_path / "bad.npz"
    if kind == "text":
        bad.write_text("x = [1, 2, 3]\n")
    elif kind == "npy":
        with open(bad, "wb") as fh:
            np.save(fh, ob.random_inputs(3))
    else:
        np.savez(bad, x=ob.random_inputs(3))
        bad.write_bytes(bad.read_bytes()[:100])
    line = _expect_error(capsys, _score_args(files, "--input", bad), ".npz", str(bad))
    if kind == "npy":
        assert "not an .npz archive" in line and "cannot read" not in line


def test_error_npz_without_x(files, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "noxx.npz"
    np.savez(bad, images=ob.random_inputs(3), labels=np.arange(3))
    line = _expect_error(capsys, _score_args(files, "--input", bad), "'x'")
    assert f"{bad} has arrays ['images', 'labels']; expected an array named 'x'" in line
    assert "cannot read" not in line  # the file was read fine; only 'x' is missing
    line = _expect_error(capsys, _score_args(files, "--features", bad), "'f'")
    assert "images" in line


def test_error_wrong_shape(files, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "flat.npz"
    np.savez(bad, x=ob.random_inputs(4).reshape(4, -1))
    _expect_error(capsys, _score_args(files, "--input", bad), "expected input of shape", "(4, 36)")
    bad = tmp_path / "rgb.npz"
    np.savez(bad, x=np.zeros((4, 3, 6, 6), np.float32))
    _expect_error(capsys, _score_args(files, "--input", bad), "('N', 1, 6, 6)")


def test_error_nan_values(files, capsys, tmp_path: Path) -> None:
    x = ob.random_inputs(4).astype(np.float64)
    x[1, 0, 2, 2] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, x=x)
    _expect_error(capsys, _score_args(files, "--input", bad), "NaN")
    _expect_error(
        capsys, ["fit", "--model", files["model"], "--train", bad, "--out", tmp_path / "art"], "NaN"
    )
    f = np.load(files["feats"])["f"].copy()
    f[0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", f=f)
    _expect_error(capsys, _score_args(files, "--features", tmp_path / "inf.npz"), "Inf")


def test_error_integer_input_dtype(files, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "int.npz"
    np.savez(bad, x=np.zeros((2, *ob.INPUT_SHAPE), np.int64))
    _expect_error(capsys, _score_args(files, "--input", bad), "float32", "int64")


def test_error_empty_array(files, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "empty.npz"
    np.savez(bad, x=np.zeros((0, *ob.INPUT_SHAPE), np.float32))
    _expect_error(capsys, _score_args(files, "--input", bad), "empty")
    _expect_error(
        capsys,
        ["fit", "--model", files["model"], "--train", bad, "--out", tmp_path / "art"],
        "empty",
    )
    np.savez(tmp_path / "emptyf.npz", f=np.zeros((0, ob.N_FEATURES), np.float32))
    _expect_error(capsys, _score_args(files, "--features", tmp_path / "emptyf.npz"), "empty")


@pytest.mark.parametrize(
    "y",
    [np.arange(5), np.zeros(N_TRAIN, np.float64), np.zeros((N_TRAIN, 1), np.int64)],
    ids=["short", "float", "2d"],
)
def test_error_bad_labels(files, capsys, tmp_path: Path, y: np.ndarray) -> None:
    bad = tmp_path / "train.npz"
    np.savez(bad, x=ob.random_inputs(N_TRAIN), y=y)
    _expect_error(
        capsys,
        ["fit", "--model", files["model"], "--train", bad, "--out", tmp_path / "art"],
        "expected integer labels 'y'",
        f"({N_TRAIN},)",
    )
    assert not (tmp_path / "art").exists()


def test_error_unknown_artifact(files, capsys, tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    _expect_error(
        capsys,
        ["score", "--artifact", nowhere, "--input", files["test"], "--out", tmp_path / "o.npz"],
        str(nowhere),
        "manifest.json",
    )
    _expect_error(capsys, ["info", "--artifact", nowhere], "manifest.json")
    assert not (tmp_path / "o.npz").exists()


def test_error_features_wrong_dim(files, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "f.npz"
    np.savez(bad, f=np.zeros((3, ob.N_FEATURES + 1), np.float32))
    _expect_error(
        capsys,
        _score_args(files, "--features", bad),
        f"(N, {ob.N_FEATURES})",
        f"(3, {ob.N_FEATURES + 1})",
    )
    np.savez(bad, f=np.zeros(ob.N_FEATURES, np.float32))
    _expect_error(capsys, _score_args(files, "--features", bad), f"(N, {ob.N_FEATURES})")


def test_error_other_model_and_refused_model(files, capsys, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(ob.gemm_transb1(seed=SEED + 1).data)
    _expect_error(
        capsys,
        [
            "score",
            "--artifact",
            files["art"],
            "--input",
            files["test"],
            "--model",
            other,
            "--out",
            tmp_path / "o.npz",
        ],
        "sha256",
    )
    relu = tmp_path / "relu.onnx"
    relu.write_bytes(ob.ends_in_relu())
    _expect_error(
        capsys,
        ["fit", "--model", relu, "--train", files["train"], "--out", tmp_path / "art"],
        "Relu",
    )


def test_error_existing_artifact(files, capsys) -> None:
    before = read_manifest(files["art"])
    _expect_error(
        capsys,
        ["fit", "--model", files["model"], "--train", files["train"], "--out", files["art"]],
        "already exists",
        "--overwrite",
    )
    assert read_manifest(files["art"]) == before


def test_error_input_on_feature_only_artifact(
    files, capsys, tmp_path: Path, built: ob.Built
) -> None:
    feats = np.load(files["feats"])["f"]
    art = save_artifact(
        Guard(calib_fraction=0).fit_features(feats, built.W, built.b), tmp_path / "feat"
    )
    _expect_error(
        capsys,
        ["score", "--artifact", art, "--input", files["test"], "--out", tmp_path / "o.npz"],
        "--features",
    )


# --------------------------------------------------------------------------- real process
def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "guard"
    if not exe.is_file():
        exe = Path("/work/main/.venv/bin/guard")
    np.savez(tmp_path / "x.npz", x=ob.random_inputs(2))
    proc = subprocess.run(
        [
            str(exe),
            "score",
            "--artifact",
            str(tmp_path / "nonexistent"),
            "--input",
            str(tmp_path / "x.npz"),
            "--out",
            str(tmp_path / "o.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guard: error: "), proc.stderr
    assert "nonexistent" in lines[0]
    assert not (tmp_path / "o.npz").exists()


# --------------------------------------------------------------------------- option values
def _fit_args(files, out: Path, *extra) -> list:
    return ["fit", "--model", files["model"], "--train", files["train"], "--out", out, *extra]


@pytest.mark.parametrize(
    ("command", "option", "value", "needle"),
    [
        ("fit", "--batch-size", "0", "positive integer"),
        ("fit", "--batch-size", "-2", "positive integer"),
        ("fit", "--batch-size", "two", "positive integer"),
        ("fit", "--limit", "-5", "positive integer"),
        ("fit", "--limit", "0", "positive integer"),
        ("fit", "--hull-k", "0", "positive integer"),
        ("fit", "--hull-tol", "-1", "positive number"),
        ("fit", "--calib-fraction", "-0.1", "[0, 1)"),
        ("fit", "--calib-fraction", "1", "[0, 1)"),
        ("fit", "--calib-fraction", "1.5", "[0, 1)"),
        ("fit", "--calib-fraction", "nan", "[0, 1)"),
        ("fit", "--target-abstain-rate", "0", "(0, 1)"),
        ("fit", "--target-flag-rate", "1", "(0, 1)"),
        ("score", "--top-support", "-3", "non-negative integer"),
        ("score", "--n-jobs", "0", "thread count"),
        ("fit", "--n-jobs", "many", "integer"),
        ("report", "--n-test", "0", "positive integer"),
        ("report", "--n-calib", "-1", "non-negative integer"),
        ("report", "--n-pixel", "-1", "non-negative integer"),
        ("report", "--seed", "-1", "non-negative integer"),
    ],
)
def test_error_bad_option_values(
    files, capsys, tmp_path: Path, command: str, option: str, value: str, needle: str
) -> None:
    out = tmp_path / "out"
    if command == "fit":
        argv = _fit_args(files, out, option, value)
    elif command == "score":
        argv = _score_args(files, "--input", files["test"])[:-2] + ["--out", out, option, value]
    else:
        argv = ["report", "--artifact", files["art"], "--out", out, option, value]
    line = _expect_error(capsys, argv, option, needle, repr(value))
    assert line.startswith("guard: error: argument ")
    assert not out.exists()


def test_error_unwritable_out(files, capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "sub" / "out"
    _expect_error(capsys, _fit_args(files, out, "--calib-fraction", "0"), "--out", str(blocker))
    _expect_error(
        capsys, _score_args(files, "--features", files["feats"])[:-2] + ["--out", out], "--out"
    )
    _expect_error(capsys, ["report", "--artifact", files["art"], "--out", out], "--out")
    # score --out is an existing directory; fit --out an existing file
    _expect_error(
        capsys,
        _score_args(files, "--features", files["feats"])[:-2] + ["--out", tmp_path],
        "is a directory",
    )
    _expect_error(
        capsys, _fit_args(files, blocker, "--calib-fraction", "0", "--overwrite"), "not a directory"
    )
    assert blocker.read_text() == "not a directory"


def test_error_too_few_calibration_inputs_says_how_to_fix(files, capsys, tmp_path: Path) -> None:
    line = _expect_error(
        capsys,
        _fit_args(files, tmp_path / "art"),  # defaults: --calib-fraction 0.1 of 150 = 15
        "15",
        "--calib ",
        "--calib-fraction",
        "100",
    )
    assert "CombinedScore" not in line and "combined score needs" not in line
    assert not (tmp_path / "art").exists()
    np.savez(tmp_path / "calib.npz", x=ob.random_inputs(30, seed=40))
    _expect_error(
        capsys, _fit_args(files, tmp_path / "art", "--calib", tmp_path / "calib.npz"), "30", "100"
    )
    # the fixes it names work: a larger fraction, or fewer needed (no combined OOD score and
    # a flag rate that 45 calibration inputs can reach)
    rc, _, err = _run(
        capsys,
        _fit_args(files, tmp_path / "art", "--calib-fraction", "0.67", "--no-progress"),
    )
    assert rc == 0, err
    rc, stdout, err = _run(
        capsys,
        _fit_args(
            files,
            tmp_path / "art2",
            "--calib-fraction",
            "0.3",
            "--no-ood",
            "--target-flag-rate",
            "0.05",
            "--no-progress",
        ),
    )
    assert rc == 0, err
    assert "calibrated on 45 held-out inputs" in stdout
    assert read_manifest(tmp_path / "art2")["params"]["ood"] is False


def test_help_and_version_return_zero(capsys) -> None:
    assert main(["--version"]) == 0
    assert main(["fit", "--help"]) == 0
    assert "--calib-fraction" in capsys.readouterr().out
