"""Smoke test of ``scripts/eval_adversarial.py`` (issue 4, "Adversarial"): the attack code runs
end to end on a handful of images with few steps and writes its JSON and Markdown with the
expected keys.

A small guard is fitted on 300 Fashion-MNIST training images (102 held out to calibrate the
thresholds) and saved as an artifact, so the test does not depend on ``artifacts/``. No attack
strength is asserted here; the numbers come from the full run (``--n 500``).

Skipped without torch, without the Adversarial Robustness Toolbox
(``adversarial-robustness-toolbox``, in the ``test`` extra), or without the built-in model and
Fashion-MNIST.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("art")

from guard import Guard, OnnxClassifier  # noqa: E402
from guard.artifact import save_artifact  # noqa: E402
from guard.datasets import (  # noqa: E402
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
)
from guard.defaults import DEFAULT_MODEL  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "eval_adversarial.py"
WEIGHTS = REPO / "guard" / "assets" / "fmnist_resnet.pt"

pytestmark = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file()
    or not WEIGHTS.is_file()
    or not (DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the built-in model, its torch weights and Fashion-MNIST (dataset-fashion-mnist)",
)

N = 8
METRIC_KEYS = {
    "n_attacked",
    "n_success",
    "success_rate",
    "twin_success_rate",
    "median_l2",
    "median_linf",
    "detection_rate",
    "abstain_rate",
    "caught_rate",
    "full_evasion_rate",
    "auroc_neg_d_min",
    "auroc_neg_ambiguity",
    "auroc_hull",
    "median_d_min_clean",
    "median_d_min_adv",
    "median_hull_adv",
    "seconds",
}


@pytest.fixture(scope="module")
def ea():
    spec = importlib.util.spec_from_file_location("eval_adversarial", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = load_fashion_mnist("train")
    guard = Guard(calib_fraction=0.34).fit(
        OnnxClassifier(DEFAULT_MODEL),
        as_model_input(x[:300]),
        y[:300],
        class_names=list(FASHION_MNIST_CLASSES),
    )
    assert guard.thresholds_.n_calib == 102 and guard.thresholds_.d_min > 0
    return save_artifact(guard, tmp_path_factory.mktemp("adv") / "fmnist_tiny")


def test_twin_matches_onnx_and_margin_is_a_lower_bound(ea, tiny_artifact: Path) -> None:
    from guard.artifact import load_artifact

    guard = load_artifact(tiny_artifact)
    net = ea.load_twin()
    x, y, idx = ea.first_correct(guard, N)
    assert x.shape == (N, 1, 28, 28) and x.dtype == np.float32 and len(idx) == N
    chk = ea.twin_check(net, guard, x)
    assert chk["max_abs_logit_diff"] < ea.TWIN_TOL, chk
    assert chk["pred_agreement"] == 1.0 and chk["max_abs_W_diff"] < 1e-6, chk
    assert chk["max_abs_b_diff"] < 1e-6, chk
    # The adaptive attack's closed-form margin of the top class never exceeds the exact d_min.
    s = guard.score(x)
    with torch.no_grad():
        z = net(torch.from_numpy(x))
        W = net.fc.weight
        wdist = torch.cdist(W, W).fill_diagonal_(math.inf)
        m = ea.closed_form_margin(z, z.argmax(1), wdist).numpy()
    assert np.all(m > 0) and np.all(m <= s.d_min + 1e-4), (m, s.d_min)


def test_fast_class_gradient_equals_art(ea) -> None:
    from art.estimators.classification import PyTorchClassifier

    net = ea.load_twin()
    x = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    label = np.array([0, 3, 3, 9, 1, 0])
    ref = PyTorchClassifier(
        model=net,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    got, want = ea.art_classifier(net).class_gradient(x, label), ref.class_gradient(x, label)
    assert got.shape == want.shape == (6, 1, 1, 28, 28)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_script_runs_and_writes_expected_keys(ea, tiny_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "adv"
    doc = ea.main(
        [
            "--n",
            str(N),
            "--artifact",
            str(tiny_artifact),
            "--out",
            str(out),
            "--pgd-steps",
            "2",
            "--adaptive-steps",
            "2",
            "--deepfool-iter",
            "3",
            "--cw-iter",
            "2",
            "--cw-search",
            "1",
            "--n-ref",
            "100",
            "--threads",
            "1",
        ]
    )
    on_disk = json.loads((out / "adversarial.json").read_text())
    md = (out / "adversarial.md").read_text()
    assert (
        on_disk["results"].keys()
        == doc["results"].keys()
        == {"twin_check", "clean", "attacks", "adaptive"}
    )
    assert on_disk["library"]["name"] == "adversarial-robustness-toolbox"
    assert {"command", "torch", "config", "thresholds", "seconds"} <= set(on_disk)
    res = on_disk["results"]
    assert res["twin_check"]["max_abs_logit_diff"] < ea.TWIN_TOL
    assert res["clean"]["n"] == N
    assert list(res["attacks"]) == ea.attack_names()
    assert len(res["adaptive"]) == len(ea.ADAPTIVE)
    for r in [*res["attacks"].values(), *res["adaptive"].values()]:
        assert METRIC_KEYS <= set(r), METRIC_KEYS - set(r)
        assert r["n_attacked"] == N and 0 <= r["success_rate"] <= 1
        if r["n_success"]:
            assert 0 <= r["detection_rate"] <= 1 and 0 <= r["auroc_neg_d_min"] <= 1
            assert r["median_l2"] > 0
    for name in res["adaptive"]:
        eps = float(name.split(":")[0].removeprefix("eps="))
        assert res["adaptive"][name]["eps"] == eps
        if res["adaptive"][name]["n_success"]:
            assert res["adaptive"][name]["median_linf"] <= eps + 1e-6
    for name in [*res["attacks"], *res["adaptive"]]:
        assert f"| {name} |" in md
