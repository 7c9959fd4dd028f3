"""Cross-check: the peers of guard.detectors (the one implementation the combined score uses too)
against the `pytorch-ood` package's detectors on the same features.

Real data: the default model's penultimate features of 3,000 Fashion-MNIST training images (fit),
1,000 test images (ID) against 1,000 handwritten digits and 1,000 uniform-noise images (OOD).
AUROCs must agree to 1e-3 and the per-sample scores must be (affinely) the same ranking
(correlation > 0.999).

pytorch-ood 0.4.0 imports torchvision at import time, and no torchvision installs beside the
project's pinned torch CPU build, so pytorch-ood runs in a separate env, ``.venv-xcheck``
(torch, torchvision, pytorch-ood pinned in ``tests/xcheck-requirements.txt``), which `make test`
builds. This module computes the features and our scores in the project's env, writes the
features, labels and final layer to an .npz and runs ``pytorch_ood_scores.py`` (beside this file)
once in ``.venv-xcheck``: it fits and runs pytorch-ood's real detectors (MaxSoftmax,
EnergyBased, Mahalanobis, KNN with k = 50, ViM, fDBD) through their ``fit_features`` /
``predict_features`` API (the logit detectors through the final layer as a ``torch.nn.Linear``)
and writes their scores back. The module is skipped only when ``.venv-xcheck/bin/python`` does not
exist; a failing script fails the tests, with its stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from guard import OnnxClassifier
from guard.defaults import DEFAULT_MODEL
from guard.detectors import make
from guard.evaluation.metrics import auroc

evalsets = pytest.importorskip("guard.evaluation.sets")

N_FIT, N_EVAL = 3000, 1000
NAMES = ("msp", "energy", "mahalanobis", "knn", "vim", "fdbd")
SPLITS = ("id", "digits", "uniform")

ROOT = Path(__file__).resolve().parents[3]
XCHECK_PYTHON = ROOT / ".venv-xcheck" / "bin" / "python"
SCRIPT = Path(__file__).with_name("pytorch_ood_scores.py")


@pytest.fixture(scope="module")
def data():
    from guard.datasets import DataError

    try:
        x_fit, y_fit = evalsets.fmnist_train(N_FIT, seed=0)
        x_id, _ = evalsets.fmnist_test(N_EVAL, seed=0)
    except DataError as exc:  # pragma: no cover - setup installs the data set
        pytest.skip(str(exc))
    clf = OnnxClassifier(DEFAULT_MODEL)
    feats = {}
    for name, x in (
        ("fit", x_fit),
        ("id", x_id),
        ("digits", evalsets.digits(N_EVAL, seed=0)),
        ("uniform", evalsets.uniform_noise(N_EVAL)),
    ):
        feats[name] = clf.run(x)[1]
    return clf, feats, y_fit


@pytest.fixture(scope="module")
def theirs(data, tmp_path_factory):
    """pytorch-ood's scores {name: {split: (M,) float64}} from one run of the script.

    Skips when the env is missing; a failed run gives ``{"error": message}`` instead.
    """
    if not XCHECK_PYTHON.exists():
        pytest.skip(
            f"{XCHECK_PYTHON.relative_to(ROOT)} not found: `make test` builds the "
            "pytorch-ood cross-check env (or `make xcheck`)"
        )
    clf, feats, y_fit = data
    tmp = tmp_path_factory.mktemp("pytorch_ood")
    src, dst = tmp / "in.npz", tmp / "out.npz"
    np.savez(
        src,
        y_fit=np.asarray(y_fit, dtype=np.int64),
        W=np.asarray(clf.W, dtype=np.float32),
        b=np.asarray(clf.b, dtype=np.float32),
        **{k: np.asarray(v, dtype=np.float32) for k, v in feats.items()},
    )
    try:
        proc = subprocess.run(
            [str(XCHECK_PYTHON), str(SCRIPT), str(src), str(dst)],
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired as exc:
        return {"error": f"{SCRIPT.name} timed out in .venv-xcheck:\n{exc.stderr or ''}"}
    if proc.returncode != 0 or not dst.exists():  # each test fails with the script's stderr
        return {
            "error": f"{SCRIPT.name} failed in .venv-xcheck (exit {proc.returncode}):\n"
            f"{proc.stderr}"
        }
    with np.load(dst) as d:
        return {
            "versions": str(d["versions"]),
            **{name: {s: d[f"{name}__{s}"] for s in SPLITS} for name in NAMES},
        }


@pytest.mark.parametrize("name", NAMES)
def test_same_auroc_and_scores_as_pytorch_ood(data, theirs, name):
    if "error" in theirs:
        pytest.fail(theirs["error"], pytrace=False)
    clf, feats, y_fit = data
    ours = make(name).fit(feats["fit"], y_fit, clf.W, clf.b)
    s_ours = {k: ours.score(feats[k]) for k in SPLITS}
    s_theirs = theirs[name]
    for k in SPLITS:
        assert s_theirs[k].shape == s_ours[k].shape and np.all(np.isfinite(s_theirs[k])), (name, k)
    for ood in ("digits", "uniform"):
        a_ours = auroc(s_ours["id"], s_ours[ood])
        a_theirs = auroc(s_theirs["id"], s_theirs[ood])
        assert a_ours == pytest.approx(a_theirs, abs=1e-3), (
            name,
            ood,
            a_ours,
            a_theirs,
            theirs["versions"],
        )
    x = np.concatenate([s_ours[k] for k in SPLITS])
    y = np.concatenate([s_theirs[k] for k in SPLITS])
    assert np.corrcoef(x, y)[0, 1] > 0.999, (name, theirs["versions"])  # positive affine map
