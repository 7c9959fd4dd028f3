"""Acceptance: the real, unmodified ``tritonclient.http`` against the HTTP/REST transport, and
its answers equal ``tritonclient.grpc``'s on the same images, output by output (JSON and
Triton's binary tensor extension, both ways)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from server.dataplane.outputs import OUTPUTS

from ..helpers import INPUT_NAME, MODEL, assert_outputs_match, expected, images
from .rest import triton_http_client

ALL = list(OUTPUTS)


@pytest.fixture(scope="module")
def hclient(server) -> Iterator[httpclient.InferenceServerClient]:
    c = triton_http_client(server.http_url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def gclient(server) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(url=server.target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def x32() -> np.ndarray:
    return images(5, seed=31)


@pytest.fixture(scope="module")
def x8(x32: np.ndarray) -> np.ndarray:
    return np.random.default_rng(32).integers(0, 256, size=x32.shape, dtype=np.uint8)


def http_infer(
    client: httpclient.InferenceServerClient,
    x: np.ndarray,
    datatype: str = "FP32",
    names: list[str] | None = None,
    binary_in: bool = True,
    binary_out: bool = True,
    model_version: str = "",
) -> dict[str, np.ndarray]:
    inp = httpclient.InferInput(INPUT_NAME, list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outs = (
        None
        if names is None
        else [httpclient.InferRequestedOutput(n, binary_data=binary_out) for n in names]
    )
    result = client.infer(MODEL, [inp], outputs=outs, model_version=model_version)
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def grpc_infer(
    client: grpcclient.InferenceServerClient,
    x: np.ndarray,
    datatype: str = "FP32",
    names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    inp = grpcclient.InferInput(INPUT_NAME, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    outs = None if names is None else [grpcclient.InferRequestedOutput(n) for n in names]
    result = client.infer(MODEL, [inp], outputs=outs)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Every output equal: names, order, dtype, shape and values (NaN where NaN)."""
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize(
    "binary_in, binary_out", [(True, True), (False, False), (True, False), (False, True)]
)
@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_every_output_equals_grpc(
    hclient, gclient, x32, x8, guard, datatype, binary_in, binary_out
):
    x = x32 if datatype == "FP32" else x8
    got = http_infer(hclient, x, datatype, ALL, binary_in, binary_out)
    want = grpc_infer(gclient, x, datatype, ALL)
    assert list(want) == ALL
    assert_same(got, want)
    ref = expected(guard, x if datatype == "FP32" else x.astype(np.float32) / 255.0)
    assert_outputs_match(got, ref)


@pytest.mark.parametrize("binary_in", [True, False])
def test_default_outputs_equal_grpc(hclient, gclient, x32, binary_in):
    """No outputs named: tritonclient asks for binary_data_output; the default set returns."""
    assert_same(http_infer(hclient, x32, binary_in=binary_in), grpc_infer(gclient, x32))


def test_filtered_outputs_and_version(hclient, gclient, x32):
    names = ["prediction", "hull_distance", "margins"]
    got = http_infer(hclient, x32, names=names, binary_out=False, model_version="1")
    assert_same(got, grpc_infer(gclient, x32, names=names))


def test_health_and_metadata(hclient, gclient):
    assert hclient.is_server_live() and hclient.is_server_ready()
    assert hclient.is_model_ready(MODEL) and hclient.is_model_ready(MODEL, "1")
    assert not hclient.is_model_ready("nope") and not hclient.is_model_ready(MODEL, "2")
    hmd = hclient.get_model_metadata(MODEL)
    gmd = gclient.get_model_metadata(MODEL)
    assert hmd["name"] == gmd.name and hmd["versions"] == list(gmd.versions)
    assert hmd["platform"] == gmd.platform
    for key in ("inputs", "outputs"):
        assert [(t["name"], t["datatype"], t["shape"]) for t in hmd[key]] == [
            (t.name, t.datatype, list(t.shape)) for t in getattr(gmd, key)
        ]
    assert hclient.get_model_metadata(MODEL, "1") == hmd
    smd = hclient.get_server_metadata()
    gsmd = gclient.get_server_metadata()
    assert (smd["name"], smd["version"]) == (gsmd.name, gsmd.version)


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    "case, status",
    [
        ("unknown_model", "404"),
        ("unknown_version", "404"),
        ("wrong_shape", "400"),
        ("unknown_output", "400"),
        ("wrong_input_name", "400"),
    ],
)
def test_errors_equal_grpc(hclient, gclient, x32, case, status):
    """The same bad request gets the same message over both transports, with the table's
    status (HTTP) and code (gRPC)."""
    model, version, x, names, name = MODEL, "", x32, None, INPUT_NAME
    if case == "unknown_model":
        model = "nope"
    elif case == "unknown_version":
        version = "7"
    elif case == "wrong_shape":
        x = x32.reshape(5, 1, 36)
    elif case == "unknown_output":
        names = ["nope"]
    else:
        name = "y"

    def via(mod, client, **kw):
        inp = mod.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outs = None if names is None else [mod.InferRequestedOutput(n) for n in names]
        return lambda: client.infer(model, [inp], outputs=outs, model_version=version)

    h = _error(via(httpclient, hclient))
    g = _error(via(grpcclient, gclient))
    assert h.status() == status
    assert h.message() == g.message(), (h.message(), g.message())
    grpc_code = {"404": "StatusCode.NOT_FOUND", "400": "StatusCode.INVALID_ARGUMENT"}[status]
    assert g.status() == grpc_code
