"""Acceptance: the real, unmodified tritonclient talks to the server.

tritonclient can never be imported in this process (its generated ``inference`` protos clash with
``server/gen`` in protobuf's default descriptor pool), so ``triton_client.py`` runs it in a
subprocess; the server runs here, on a background event loop, so the expected values can be
computed with the same guard object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from server.convert import OUTPUTS

from .helpers import MODEL, assert_outputs_match, expected, images

SCRIPT = Path(__file__).with_name("triton_client.py")
DEFAULT = ["logits", "prediction", "abstain", "flags", "margin_min", "nearest_class",
           "hull_distance", "hull_lower", "ambiguity", "ood_score", "p_value", "in_union"]
# tritonclient's numpy dtype for each datatype the server sends
NP = {"FP32": "float32", "INT64": "int64", "INT32": "int32", "BOOL": "bool"}


@pytest.fixture(scope="module")
def triton(server, tmp_path_factory):  # noqa: ANN001, ANN201
    """Run every client mode once; returns (results.json dict, outputs.npz dict, inputs)."""
    tmp = tmp_path_factory.mktemp("triton")
    x32 = images(4, seed=11)
    x8 = np.random.default_rng(12).integers(0, 256, size=x32.shape, dtype=np.uint8)
    np.savez(tmp / "inputs.npz", x_fp32=x32, x_uint8=x8)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), server.target, MODEL,
         "health,metadata,infer,filter,uint8,error", str(tmp / "inputs.npz"), str(tmp / "out")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "descriptor" not in proc.stderr.lower(), proc.stderr
    res = json.loads((tmp / "out" / "results.json").read_text())
    with np.load(tmp / "out" / "outputs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return res, arrays, x32, x8


def _mode(arrays: dict, mode: str) -> dict[str, np.ndarray]:
    return {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(mode + "/")}


def test_health(triton):  # noqa: ANN001
    res = triton[0]
    assert res["server_live"] is True
    assert res["server_ready"] is True
    assert res["model_ready"] is True
    assert res["other_model_ready"] is False


def test_server_metadata(triton):  # noqa: ANN001
    from guard import __version__

    md = triton[0]["server_metadata"]
    assert md["name"] == "guard"
    assert md["version"] == __version__


def test_model_metadata_describes_every_output(triton, server, guard):  # noqa: ANN001

    md = triton[0]["model_metadata"]
    assert md["name"] == MODEL
    assert md["versions"] == ["1"]
    [inp] = md["inputs"]
    assert inp["name"] == server.srv.input_name
    assert inp["datatype"] == "FP32"
    assert [int(d) for d in inp["shape"]] == [-1, 1, 6, 6]
    outs = {o["name"]: o for o in md["outputs"]}
    assert list(outs) == list(OUTPUTS)  # geometry on: every output, in table order
    n = len(guard.class_names_)
    per_image = {"logits": [n], "margins": [n], "support_indices": [guard.top_support],
                 "support_weights": [guard.top_support]}
    for name, spec in OUTPUTS.items():
        assert outs[name]["datatype"] == spec.datatype, name
        assert [int(d) for d in outs[name]["shape"]] == [-1] + per_image.get(name, []), name


def test_infer_fp32_matches_guard(triton, guard):  # noqa: ANN001
    res, arrays, x32, _ = triton
    got = _mode(arrays, "infer")
    assert list(res["infer_outputs"]) == DEFAULT
    for name, (dtype, shape) in res["infer_outputs"].items():
        assert shape[0] == len(x32), name
        assert dtype == NP[OUTPUTS[name].datatype], name
    assert_outputs_match(got, expected(guard, x32))
    # the decision is consistent with its flags
    np.testing.assert_array_equal(got["abstain"], (got["flags"] & 2) != 0)


def test_requested_outputs_are_exactly_those(triton, guard):  # noqa: ANN001
    res, arrays, x32, _ = triton
    got = _mode(arrays, "filter")
    assert list(res["filter_outputs"]) == ["prediction", "hull_distance"]
    assert_outputs_match(got, expected(guard, x32))


def test_uint8_input_is_scaled(triton, guard):  # noqa: ANN001
    res, arrays, _, x8 = triton
    got = _mode(arrays, "uint8")
    assert list(res["uint8_outputs"]) == DEFAULT
    assert_outputs_match(got, expected(guard, x8.astype(np.float32) / 255.0))


def test_errors_are_inference_server_exceptions(triton):  # noqa: ANN001
    errors = triton[0]["errors"]
    for case in ("unknown_model_infer", "unknown_model_metadata"):
        err = errors[case]
        assert err is not None, f"{case}: no exception"
        assert "NOT_FOUND" in err["status"], err
        assert MODEL + "-does-not-exist" in err["message"], err
    err = errors["bad_shape"]
    assert err is not None and "INVALID_ARGUMENT" in err["status"], err
    assert "shape" in err["message"] and "[-1, 1, 6, 6]" in err["message"], err


def test_no_tritonclient_in_this_process():
    assert not any(m == "tritonclient" or m.startswith("tritonclient.") for m in sys.modules)
