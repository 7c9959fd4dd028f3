"""The REST endpoints with plain HTTP (the standard library, and curl as the README runs it):
health, metadata, JSON and binary bodies, every bad request -> the table's HTTP status with
``{"error": "..."}``, limits, metrics."""

from __future__ import annotations

import json
import re
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from ..helpers import INPUT_NAME, MODEL, assert_outputs_match, expected, images, sample, scrape
from .rest import binary_body, call, gzipped, infer, infer_path, json_request

README = Path(__file__).resolve().parents[3] / "README.md"
_NP = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}


def _outputs(doc: dict) -> dict[str, np.ndarray]:
    return {
        o["name"]: np.array(o["data"], dtype=_NP[o["datatype"]]).reshape(o["shape"])
        for o in doc["outputs"]
    }


def _binary_outputs(reply) -> dict[str, np.ndarray]:
    n = int(reply.headers["inference-header-content-length"])
    doc = json.loads(reply.body[:n])
    out, offset = {}, n
    for o in doc["outputs"]:
        size = o["parameters"]["binary_data_size"]
        raw = reply.body[offset : offset + size]
        out[o["name"]] = np.frombuffer(raw, _NP[o["datatype"]]).reshape(o["shape"])
        offset += size
    assert offset == len(reply.body)
    return out


# ---------------------------------------------------------------- health and metadata
def test_health(server):
    port = server.http_port
    live = call(port, "GET", "/v2/health/live")
    ready = call(port, "GET", "/v2/health/ready")
    assert (live.status, live.json()) == (200, {"live": True})
    assert (ready.status, ready.json()) == (200, {"ready": True})
    for path in (f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"):
        r = call(port, "GET", path)
        assert (r.status, r.json()) == (200, {"ready": True})
    for path in ("/v2/models/nope/ready", f"/v2/models/{MODEL}/versions/2/ready"):
        r = call(port, "GET", path)
        assert (r.status, r.json()) == (400, {"ready": False})  # the protocol: 4xx = false


def test_metadata(server):
    port = server.http_port
    md = call(port, "GET", "/v2")
    assert md.status == 200 and md.json()["name"] == "guard"
    m = call(port, "GET", f"/v2/models/{MODEL}")
    assert m.status == 200 and m.headers["content-type"].startswith("application/json")
    doc = m.json()
    assert doc["name"] == MODEL and doc["versions"] == ["1"]
    assert doc["inputs"] == [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 1, 6, 6]}]
    assert [o["name"] for o in doc["outputs"]][:2] == ["logits", "prediction"]
    assert call(port, "GET", f"/v2/models/{MODEL}/versions/1").json() == doc
    r = call(port, "GET", f"/v2/models/{MODEL}/versions/2")
    assert r.status == 404 and "no version '2'" in r.error
    r = call(port, "GET", "/v2/models/" + "n" * 5000)
    assert r.status == 404 and len(r.error) < 400 and "5000 characters" in r.error


# ---------------------------------------------------------------- inference
def test_json_and_binary_equal_the_guard(server, guard):
    x = images(3, seed=41)
    want = expected(guard, x)
    names = ["logits", "prediction", "abstain", "flags", "margins", "support_indices"]
    r = infer(server.http_port, json_request(x, names, id="req-7"))
    assert r.status == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == (MODEL, "1", "req-7")
    got = _outputs(doc)
    assert list(got) == names
    assert_outputs_match(got, want)
    # nested data (one list per dimension) is the same request
    nested = json_request(x, names)
    nested["inputs"][0]["data"] = x.tolist()
    got_nested = _outputs(infer(server.http_port, nested).json())
    for n in names:
        np.testing.assert_array_equal(got_nested[n], got[n], err_msg=n)

    body, headers = binary_body(x, names)
    rb = call(server.http_port, "POST", infer_path(), body, headers)
    assert rb.status == 200, rb.body[:300]
    assert rb.headers["content-type"] == "application/octet-stream"
    gotb = _binary_outputs(rb)
    assert list(gotb) == names
    for n in names:
        np.testing.assert_array_equal(gotb[n], got[n], err_msg=n)


def test_per_output_binary_flag_overrides_the_default(server):
    x = images(2, seed=42)
    doc = json_request(x, None, parameters={"binary_data_output": True})
    doc["outputs"] = [
        {"name": "prediction", "parameters": {"binary_data": False}},
        {"name": "logits"},
    ]
    r = infer(server.http_port, doc)
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.body[:n])
    pred, logits = head["outputs"]
    assert "data" in pred and "parameters" not in pred
    assert logits["parameters"]["binary_data_size"] == 2 * 5 * 4 == len(r.body) - n


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request(server, guard, encoding):
    x = images(2, seed=43)
    raw = json.dumps(json_request(x, ["prediction"])).encode()
    body = gzipped(raw) if encoding == "gzip" else zlib.compress(raw)
    r = infer(server.http_port, body, {"Content-Encoding": encoding})
    assert r.status == 200, r.body
    np.testing.assert_array_equal(
        _outputs(r.json())["prediction"], expected(guard, x)["prediction"]
    )


def test_chunked_request(server, guard):
    x = images(2, seed=44)
    r = infer(server.http_port, json_request(x, ["prediction"]), chunked=True)
    assert r.status == 200, r.body


# ---------------------------------------------------------------- errors
X1 = images(1, seed=45)
GOOD = json_request(X1)
GOOD_INPUT = GOOD["inputs"][0]


def _with_input(**changes) -> dict:
    t = dict(GOOD_INPUT, **changes)
    return {"inputs": [{k: v for k, v in t.items() if v is not None}]}


RAW1 = np.ascontiguousarray(X1, "<f4").tobytes()


def _binary(doc: dict, data: bytes, header_len: int | None = None) -> tuple[bytes, dict]:
    head = json.dumps(doc).encode()
    n = len(head) if header_len is None else header_len
    return head + data, {"Inference-Header-Content-Length": str(n)}


_BIN_INPUT = {k: v for k, v in GOOD_INPUT.items() if k != "data"}

BAD = {
    "not json": (b"{", {}, 400, "not valid JSON"),
    "not an object": (b"[1, 2]", {}, 400, "must be a JSON object"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, {}, 400, "too deeply"),
    "no inputs": (b"{}", {}, 400, "'inputs' is missing"),
    "inputs not a list": (b'{"inputs": 3}', {}, 400, "'inputs' must be a JSON array"),
    "input not an object": (b'{"inputs": [3]}', {}, 400, "inputs[0] must be a JSON object"),
    "no shape": (_with_input(shape=None), {}, 400, "'shape' are required"),
    "float shape": (_with_input(shape=[1, 1, 6.0, 6]), {}, 400, "list of integers"),
    "bool shape": (_with_input(shape=[True, 1, 6, 6]), {}, 400, "list of integers"),
    "name not a string": (_with_input(name=3), {}, 400, "'name' must be a JSON string"),
    "datatype": (_with_input(datatype="INT8"), {}, 400, "datatype 'INT8' not supported"),
    "shape": (_with_input(shape=[1, 36]), {}, 400, "does not match the model input"),
    "empty batch": (_with_input(shape=[0, 1, 6, 6], data=[]), {}, 400, "empty batch"),
    "negative dim": (_with_input(shape=[-1, 1, 6, 6]), {}, 400, "negative dimension"),
    "count": (_with_input(data=[0.5] * 35), {}, 400, "35 FP32 values, but shape"),
    "no data": (_with_input(data=None), {}, 400, "0 FP32 values"),
    "ragged": (_with_input(data=[[0.5] * 36, [0.5]]), {}, 400, "ragged"),
    "strings": (_with_input(data=["a"] * 36), {}, 400, "must hold numbers"),
    "nan": (
        json.dumps(_with_input(data=[float("nan")] * 36)).encode(),
        {},
        400,
        "NaN or Inf",
    ),
    "huge": (_with_input(data=[1e300] * 36), {}, 400, "NaN or Inf"),
    "uint8 range": (_with_input(datatype="UINT8", data=[300] * 36), {}, 400, "0..255"),
    "uint8 floats": (_with_input(datatype="UINT8", data=[0.5] * 36), {}, 400, "integers"),
    "two inputs": ({"inputs": [GOOD_INPUT, GOOD_INPUT]}, {}, 400, "exactly one input"),
    "input name": (_with_input(name="y"), {}, 400, "unknown input 'y'"),
    "unknown output": (dict(GOOD, outputs=[{"name": "nope"}]), {}, 400, "unknown output"),
    "output twice": (
        dict(GOOD, outputs=[{"name": "logits"}, {"name": "logits"}]),
        {},
        400,
        "more than once",
    ),
    "output no name": (dict(GOOD, outputs=[{}]), {}, 400, "'name' is required"),
    "class_count": (
        dict(GOOD, outputs=[{"name": "logits", "parameters": {"class_count": 3}}]),
        {},
        400,
        "classification extension",
    ),
    "binary_data flag": (
        dict(GOOD, outputs=[{"name": "logits", "parameters": {"binary_data": "yes"}}]),
        {},
        400,
        "binary_data must be true or false",
    ),
    "binary_data_output": (
        dict(GOOD, parameters={"binary_data_output": 1}),
        {},
        400,
        "'binary_data_output' must be true or false",
    ),
    "parameters not an object": (dict(GOOD, parameters=[]), {}, 400, "must be a JSON object"),
    "id not a string": (dict(GOOD, id=7), {}, 400, "'id' must be a JSON string"),
    "header length not int": (
        json.dumps(GOOD).encode(),
        {"Inference-Header-Content-Length": "x"},
        400,
        "must be an integer",
    ),
    "header length too long": (
        *_binary({"inputs": [_BIN_INPUT]}, b"", 10**6),
        400,
        "but the body has",
    ),
    "binary without size": (*_binary(GOOD, RAW1), 400, "binary_data_size add up to 0"),
    "binary size over the body": (
        *_binary(
            {"inputs": [dict(_BIN_INPUT, parameters={"binary_data_size": len(RAW1) + 4})]}, RAW1
        ),
        400,
        "bytes of binary data are left",
    ),
    "binary bytes vs shape": (
        *_binary({"inputs": [dict(_BIN_INPUT, parameters={"binary_data_size": 8})]}, RAW1[:8]),
        400,
        "8 raw bytes, but shape",
    ),
    "binary and data": (
        *_binary({"inputs": [dict(GOOD_INPUT, parameters={"binary_data_size": len(RAW1)})]}, RAW1),
        400,
        "both 'data' and binary_data_size",
    ),
    "binary size negative": (
        *_binary({"inputs": [dict(_BIN_INPUT, parameters={"binary_data_size": -1})]}, b""),
        400,
        "binary_data_size must be an integer >= 0",
    ),
    "encoding": (json.dumps(GOOD).encode(), {"Content-Encoding": "br"}, 400, "not supported"),
    "broken gzip": (b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"}, 400, "cannot decompress"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request(server, case):
    body, headers, status, text = BAD[case]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = call(server.http_port, "POST", infer_path(), data, headers)
    assert r.status == status, (r.status, r.body[:300])
    assert r.headers["content-type"].startswith("application/json")
    assert text in r.error, r.error


@pytest.mark.parametrize(
    "method, path, status, text",
    [
        ("POST", infer_path("nope"), 404, "unknown model 'nope'"),
        ("POST", infer_path(MODEL, "3"), 404, "has no version '3'"),
        ("GET", "/v2/models/nope", 404, "unknown model"),
        ("GET", "/v1/models", 404, "no endpoint"),
        ("GET", "/", 404, "no endpoint"),
        ("GET", infer_path(), 405, "method not allowed"),
        ("DELETE", "/v2/health/live", 405, "method not allowed"),
    ],
)
def test_wrong_path_or_method(server, method, path, status, text):
    r = call(server.http_port, method, path, json.dumps(GOOD) if method == "POST" else None)
    assert r.status == status, r.body
    assert text in r.error


def test_unexpected_error_is_500_without_details(make_server):
    st = make_server(http_port=0)

    async def broken(req):
        raise RuntimeError("secret detail")

    st.srv.dataplane.infer = broken
    r = infer(st.http_port, GOOD)
    assert r.status == 500 and "internal error in ModelInfer" in r.error
    assert "secret" not in r.error


# ---------------------------------------------------------------- limits
def test_message_size_limit(make_server):
    st = make_server(http_port=0, metrics_port=0, max_message_bytes=4096)
    big = json.dumps(json_request(images(20, seed=46))).encode()
    assert len(big) > 4096
    r = infer(st.http_port, big)
    assert r.status == 413 and "GUARD_MAX_MESSAGE_BYTES" in r.error
    r = infer(st.http_port, big, chunked=True)  # no Content-Length: refused while read
    assert r.status == 413 and "GUARD_MAX_MESSAGE_BYTES" in r.error
    bomb = gzipped(b" " * 100_000)  # small on the wire, over the limit inflated
    assert len(bomb) < 4096
    r = infer(st.http_port, bomb, {"Content-Encoding": "gzip"})
    assert r.status == 413, r.body
    assert infer(st.http_port, json_request(images(1, seed=47))).status == 200
    m = scrape(st.metrics_port)
    assert sample(m, "guard_requests_total", rpc="ModelInfer", outcome="resource_exhausted") == 3


def test_images_per_request_limit(make_server):
    st = make_server(http_port=0, max_images_per_request=2)
    r = infer(st.http_port, json_request(images(3, seed=48)))
    assert r.status == 400 and "GUARD_MAX_IMAGES_PER_REQUEST" in r.error
    assert infer(st.http_port, json_request(images(2, seed=48))).status == 200


def test_full_queue_is_429(make_server):
    from concurrent.futures import ThreadPoolExecutor

    st = make_server(http_port=0, slow_s=0.4, max_queue_size=1, max_queue_delay_ms=0.0)
    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(lambda i: infer(st.http_port, json_request(images(1, i))), range(4))
        )
    statuses = sorted(r.status for r in replies)
    assert 200 in statuses and 429 in statuses, statuses
    assert all("overloaded" in r.error for r in replies if r.status == 429)


# ---------------------------------------------------------------- metrics
def test_metrics_count_http_requests(server):
    before = scrape(server.metrics_port)
    x = images(3, seed=49)
    assert infer(server.http_port, json_request(x)).status == 200
    assert infer(server.http_port, _with_input(datatype="INT8")).status == 400
    assert call(server.http_port, "POST", infer_path("nope"), json.dumps(GOOD)).status == 404
    assert call(server.http_port, "GET", "/v2/health/live").status == 200
    after = scrape(server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("guard_requests_total", rpc="ModelInfer", outcome="ok") == 1
    assert delta("guard_requests_total", rpc="ModelInfer", outcome="invalid_argument") == 1
    assert delta("guard_requests_total", rpc="ModelInfer", outcome="not_found") == 1
    assert delta("guard_requests_total", rpc="ServerLive", outcome="ok") == 1
    assert delta("guard_request_duration_seconds_count", rpc="ModelInfer") == 3
    assert delta("guard_images_total") == 3


# ---------------------------------------------------------------- curl, as the README says
def readme_curl() -> str:
    """The README's curl command ("Serve it")."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"```sh\n([^`]*?curl [^`]*?)```", text, re.S)
    assert match, "no curl block in the README"
    return match.group(1)


def test_curl_json_request(server, guard):
    cmd = (
        readme_curl()
        .replace("localhost:8000", f"127.0.0.1:{server.http_port}")
        .replace("fmnist_resnet", MODEL)
        .replace('"input"', f'"{INPUT_NAME}"')
        .replace("[1, 1, 28, 28]", "[1, 1, 6, 6]")
        .replace("784", "36")
    )
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    got = _outputs(doc)
    want = expected(guard, np.zeros((1, 1, 6, 6), np.float32))
    assert set(got) >= {"prediction", "abstain"}
    assert_outputs_match(got, want)
