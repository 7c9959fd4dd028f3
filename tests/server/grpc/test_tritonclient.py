"""Acceptance: the real, unmodified tritonclient talks to the server.

tritonclient runs in this process, beside the server's own generated code: ours registers its
protos in a private descriptor pool, so tritonclient's copy of the same ``inference.*`` messages
in the default pool does not clash with it (``test_tritonclient_shares_the_process``). The server
runs on a background event loop, so the expected values are computed with the same guard object.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from server.dataplane.outputs import OUTPUTS

from ..helpers import INPUT_NAME, MODEL, assert_outputs_match, expected, images

DEFAULT = [
    "logits",
    "prediction",
    "abstain",
    "flags",
    "margin_min",
    "nearest_class",
    "hull_distance",
    "hull_lower",
    "ambiguity",
    "ood_score",
    "p_value",
    "in_union",
]
FILTERED = ["prediction", "hull_distance"]
# tritonclient's numpy dtype for each datatype the server sends
NP = {"FP32": "float32", "INT64": "int64", "INT32": "int32", "BOOL": "bool"}


@pytest.fixture(scope="module")
def client(server) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(url=server.target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def x32() -> np.ndarray:
    return images(4, seed=11)


@pytest.fixture(scope="module")
def x8(x32: np.ndarray) -> np.ndarray:
    return np.random.default_rng(12).integers(0, 256, size=x32.shape, dtype=np.uint8)


def _infer(
    client: grpcclient.InferenceServerClient,
    x: np.ndarray,
    datatype: str,
    names: list[str] | None = None,
    model: str = MODEL,
    input_name: str = INPUT_NAME,
) -> dict[str, np.ndarray]:
    inp = grpcclient.InferInput(input_name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    outs = None if names is None else [grpcclient.InferRequestedOutput(n) for n in names]
    result = client.infer(model, [inp], outputs=outs)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_health(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready(MODEL) is True
    assert client.is_model_ready(MODEL + "-does-not-exist") is False


def test_server_metadata(client):
    from guard import __version__

    md = client.get_server_metadata(as_json=True)
    assert md["name"] == "guard"
    assert md["version"] == __version__


def test_model_metadata_describes_every_output(client, server, guard):
    md = client.get_model_metadata(MODEL, as_json=True)
    assert md["name"] == MODEL
    assert md["versions"] == ["1"]
    [inp] = md["inputs"]
    assert inp["name"] == server.srv.model.input_name
    assert inp["datatype"] == "FP32"
    assert [int(d) for d in inp["shape"]] == [-1, 1, 6, 6]
    outs = {o["name"]: o for o in md["outputs"]}
    assert list(outs) == list(OUTPUTS)  # geometry on: every output, in table order
    n = len(guard.class_names_)
    per_image = {
        "logits": [n],
        "margins": [n],
        "support_indices": [guard.top_support],
        "support_weights": [guard.top_support],
    }
    for name, spec in OUTPUTS.items():
        assert outs[name]["datatype"] == spec.datatype, name
        assert [int(d) for d in outs[name]["shape"]] == [-1] + per_image.get(name, []), name


def test_infer_fp32_matches_guard(client, guard, x32):
    got = _infer(client, x32, "FP32")
    assert list(got) == DEFAULT
    for name, arr in got.items():
        assert arr.shape[0] == len(x32), name
        assert str(arr.dtype) == NP[OUTPUTS[name].datatype], name
    assert_outputs_match(got, expected(guard, x32))
    # the decision is consistent with its flags
    np.testing.assert_array_equal(got["abstain"], (got["flags"] & 2) != 0)


def test_requested_outputs_are_exactly_those(client, guard, x32):
    got = _infer(client, x32, "FP32", FILTERED)
    assert list(got) == FILTERED
    assert_outputs_match(got, expected(guard, x32))


def test_uint8_input_is_scaled(client, guard, x8):
    got = _infer(client, x8, "UINT8")
    assert list(got) == DEFAULT
    assert_outputs_match(got, expected(guard, x8.astype(np.float32) / 255.0))


def test_errors_are_inference_server_exceptions(client, x32):
    other = MODEL + "-does-not-exist"
    for err in (
        _error(lambda: _infer(client, x32, "FP32", model=other)),
        _error(lambda: client.get_model_metadata(other)),
    ):
        assert "NOT_FOUND" in err.status(), err
        assert other in err.message(), err
    err = _error(lambda: _infer(client, x32.reshape(len(x32), -1), "FP32"))
    assert "INVALID_ARGUMENT" in err.status(), err
    assert "shape" in err.message() and "[-1, 1, 6, 6]" in err.message(), err


@pytest.mark.parametrize("first", ["tritonclient", "server"])
def test_tritonclient_shares_the_process(first: str) -> None:
    """Either import order, in a fresh interpreter: no descriptor-pool clash, same wire names."""
    imports = {
        "tritonclient": "import tritonclient.grpc.service_pb2 as t",
        "server": "import server.grpc.server as s",
    }
    order = [first] + [k for k in imports if k != first]
    code = "; ".join(
        [imports[k] for k in order]
        + [
            "n = s.grpc_service_pb2.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name",
            "assert n == t.DESCRIPTOR.services_by_name['GRPCInferenceService'].full_name, n",
            "print(n)",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "inference.GRPCInferenceService"
