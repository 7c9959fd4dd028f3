"""``guard demo`` end to end: a small artifact of the built-in model, the server as a subprocess,
tritonclient queries, the report, SIGTERM.

The demo runs in this process (tritonclient and the server's generated code can share one),
through the installed command's entry point, ``server.cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard import Guard
from guard.artifact import SCHEMA_VERSION, save_artifact
from guard.datasets import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    as_model_input,
    load_fashion_mnist,
)
from guard.defaults import DEFAULT_MODEL
from guard.model import OnnxClassifier
from server import cli, demo

needs_data = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file()
    or not (DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the built-in model and Fashion-MNIST (dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model's guard, fitted on 2,000 training images instead of 60,000."""
    x, y = load_fashion_mnist("train")
    guard = Guard(calib_fraction=0.1).fit(
        OnnxClassifier(DEFAULT_MODEL),
        as_model_input(x[:2000]),
        y[:2000],
        class_names=list(FASHION_MNIST_CLASSES),
    )
    return save_artifact(guard, tmp_path_factory.mktemp("demo") / "fmnist_small")


@needs_data
def test_demo_end_to_end(small_artifact: Path, capsys: pytest.CaptureFixture) -> None:
    import server.grpc.server  # noqa: F401  (the server's protos, loaded beside tritonclient's)

    rc = cli.main(
        [
            "demo",
            "--artifact",
            str(small_artifact),
            "--n-fmnist",
            "40",
            "--n-digits",
            "20",
            "--n-noise",
            "8",
            "--n-constant",
            "3",
            "--batch-size",
            "16",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "Summary per source" in out
    # the decision rules state the artifact's own calibration (200 of the 2,000 images held out)
    assert "calibrated on 200 held-out training images" in out, out
    for source, n in (
        ("fashion", 40),
        ("digits", 20),
        ("uniform", 8),
        ("gaussian", 8),
        ("constant", 3),
    ):
        assert any(line.split()[:2] == [source, str(n)] for line in out.splitlines()), out
    assert "guard_requests_total" in out and 'rpc="ModelInfer"} 8.0' in out  # 3 + 2 + 1 + 1 + 1
    assert "guard_abstentions_total" in out
    assert "server stopped cleanly on SIGTERM (exit 0)" in out


def test_demo_refuses_a_broken_artifact(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the current schema, but nothing else: corrupt (another schema is refused as well)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    assert demo.main(["--artifact", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("guard demo: error:") and "corrupt" in err


def test_demo_rejects_negative_counts(capsys: pytest.CaptureFixture) -> None:
    assert demo.main(["--n-digits", "-1"]) == 2
    assert "--n-digits must be >= 0" in capsys.readouterr().err


def test_decision_text() -> None:
    assert demo.decision_text(False, 0) == "accept"
    assert demo.decision_text(True, 2) == "ABSTAIN (ood)"
    assert demo.decision_text(True, 6) == "ABSTAIN (ood, ambiguous)"
    assert demo.decision_text(False, 1) == "FLAG adversarial"
    assert demo.decision_text(True, 5) == "ABSTAIN (ambiguous) + FLAG adversarial"
