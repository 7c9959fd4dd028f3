"""Plain HTTP for the REST tests: one request with the standard library, the reply as status,
headers and body (errors included, not raised)."""

from __future__ import annotations

import gzip
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..helpers import INPUT_NAME, MODEL

TIMEOUT = 30.0

#: tritonclient.http clients, kept alive: their ``__del__`` joins a gevent pool, which fails
#: (an unraisable-exception warning) when a garbage collection in a server thread runs it.
KEEP_ALIVE: list[Any] = []


def triton_http_client(url: str) -> Any:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    KEEP_ALIVE.append(client)
    return client


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The ``{"error": "..."}`` message of an error reply (the only key)."""
        doc = self.json()
        assert isinstance(doc, dict) and set(doc) == {"error"}, doc
        assert isinstance(doc["error"], str) and doc["error"], doc
        return doc["error"]


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    chunked: bool = False,
) -> Reply:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=TIMEOUT
        )
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)
    try:
        data: Any = body.encode() if isinstance(body, str) else body
        if chunked and data is not None:
            whole, step = data, 1024
            chunks = (whole[i : i + step] for i in range(0, len(whole), step))
            conn.request(method, path, body=chunks, headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def infer_path(model: str = MODEL, version: str | None = None) -> str:
    if version is None:
        return f"/v2/models/{model}/infer"
    return f"/v2/models/{model}/versions/{version}/infer"


def json_request(
    x: np.ndarray, outputs: list[str] | None = None, datatype: str = "FP32", **extra: Any
) -> dict[str, Any]:
    """A JSON-only infer body with one input tensor ``x``."""
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": list(x.shape),
                "datatype": datatype,
                "data": x.ravel().tolist(),
            }
        ]
    }
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    doc.update(extra)
    return doc


def infer(port: int, doc: Any, headers: dict[str, str] | None = None, **kw: Any) -> Reply:
    body = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
    return call(port, "POST", infer_path(), body, headers, **kw)


def binary_body(x: np.ndarray, outputs: list[str] | None = None) -> tuple[bytes, dict[str, str]]:
    """Triton's binary extension: JSON header + raw little-endian FP32 bytes of ``x``."""
    raw = np.ascontiguousarray(x, "<f4").tobytes()
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    if outputs is not None:
        doc["outputs"] = [{"name": n} for n in outputs]
    header = json.dumps(doc).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)
