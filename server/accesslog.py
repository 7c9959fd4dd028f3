"""The access log: one structured line per request, for every transport.

Each line names the transport, the operation (the OIP / guard.v1 RPC name, which the HTTP
routes share), the model, how many images the request carried, its status (the transport-neutral
code of :mod:`server.errors` and, for HTTP, the status number), its latency and what the guard
decided (how many images it abstained on, and each flag's count). Never tensor data, never
headers or tokens.

Lines go to the ``server.access`` logger: probes (live / ready / model ready) at DEBUG, so that
a kubelet's polling does not drown the traffic, everything else at INFO. The message is
``key=value`` text; the same fields ride on the record as ``record.access``, which
:class:`JsonFormatter` (``--log-format json``) writes as top-level JSON keys.

The decision counts come from the response's ``abstain`` / ``flags`` outputs (typed results for
guard.v1); a client that asked for neither gets ``-`` there.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .errors import MAX_ECHO

log = logging.getLogger("server.access")

#: Bits of the ``flags`` output (see server/dataplane/outputs.py).
FLAG_BITS = (("adversarial", 1), ("ood", 2), ("ambiguous", 4))
#: Operations logged at DEBUG (health polling).
PROBES = frozenset({"ServerLive", "ServerReady", "ModelReady"})


@dataclass
class AccessEntry:
    """What one request's log line says; the transport fills it while it handles the request."""

    transport: str
    rpc: str
    model: str = ""
    images: int | None = None
    status: str = "OK"
    http_status: int | None = None
    latency_s: float = 0.0
    decisions: dict[str, int] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        model = self.model if len(self.model) <= MAX_ECHO else self.model[:MAX_ECHO] + "…"
        out: dict[str, Any] = {"transport": self.transport, "rpc": self.rpc, "model": model}
        out["images"] = self.images
        out["status"] = self.status
        if self.http_status is not None:
            out["http_status"] = self.http_status
        out["latency_ms"] = round(self.latency_s * 1000.0, 3)
        out.update(self.decisions)
        return out

    def set_decisions(self, abstain: np.ndarray | None, flags: np.ndarray | None) -> None:
        """Counts from a response's per-image ``abstain`` (bool) and ``flags`` (int) values."""
        if abstain is not None:
            self.decisions["abstain"] = int(np.count_nonzero(abstain))
        if flags is not None:
            f = np.asarray(flags).astype(np.int64, copy=False)
            for name, bit in FLAG_BITS:
                self.decisions[name] = int(np.count_nonzero(f & bit))


def text_line(fields: Mapping[str, Any]) -> str:
    """``key=value`` pairs; values with spaces, quotes or ``=`` are JSON-quoted."""
    parts = []
    for k, v in fields.items():
        s = "-" if v is None or v == "" else str(v)
        if any(c in s for c in ' "=') or not s.isprintable():
            s = json.dumps(s)
        parts.append(f"{k}={s}")
    return " ".join(parts)


def enabled(rpc: str) -> bool:
    """Whether a line of ``rpc`` would be written: callers skip building the entry otherwise
    (reading the decisions back from a response costs a copy of its outputs)."""
    return log.isEnabledFor(logging.DEBUG if rpc in PROBES else logging.INFO)


def emit(entry: AccessEntry) -> None:
    """Write ``entry``'s line (DEBUG for probes, INFO otherwise)."""
    if not enabled(entry.rpc):
        return
    level = logging.DEBUG if entry.rpc in PROBES else logging.INFO
    fields = entry.fields()
    log.log(level, "%s", text_line(fields), extra={"access": fields})


# ---------------------------------------------------------------- gRPC: fields from messages
def grpc_entry(rpc: str, request: Any, response: Any, status: str, latency_s: float) -> AccessEntry:
    """The entry of one gRPC call, read from its (protobuf) request and response by duck typing
    (no protobuf import: this module serves every transport)."""
    model = getattr(request, "model_name", None)
    if model is None:
        model = getattr(request, "name", "")
    entry = AccessEntry("grpc", rpc, str(model), status=status, latency_s=latency_s)
    if request is not None and rpc == "ModelInfer" and len(request.inputs):
        shape = request.inputs[0].shape
        entry.images = int(shape[0]) if len(shape) else None
    elif request is not None and rpc == "Classify" and request.HasField("images"):
        shape = request.images.shape
        entry.images = int(shape[0]) if len(shape) else None
    if response is None:
        return entry
    if rpc == "ModelInfer":
        raw = dict(zip((o.name for o in response.outputs), response.raw_output_contents))
        abstain = np.frombuffer(raw["abstain"], "?") if "abstain" in raw else None
        flags = np.frombuffer(raw["flags"], "<i4") if "flags" in raw else None
        entry.set_decisions(abstain, flags)
    elif rpc == "Classify" and len(response.results):
        res = response.results
        if res[0].HasField("decision"):
            entry.set_decisions(
                np.array([r.decision.abstain for r in res], bool),
                np.array([r.decision.flags for r in res], np.int64),
            )
    return entry


# ---------------------------------------------------------------- logging configuration
class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and an access record's fields
    as top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            doc.update(access)
        else:
            doc["message"] = record.getMessage()
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """The process's logging: ``level``, text (``TEXT_FORMAT``) or one JSON object a line."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
