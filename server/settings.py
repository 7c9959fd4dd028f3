"""The server's one settings object. Every field can be set by an environment variable
``GUARD_<FIELD>`` (e.g. ``GUARD_PORT=9001``) and by the matching ``guard serve --<field>`` flag;
the flag wins."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from guard.errors import InputError

from .security import load_tls, token_auth

ENV_PREFIX = "GUARD_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    artifact: str | None = None
    """Artifact directory from ``guard fit``; unset = the built-in Fashion-MNIST default
    (``artifacts/fmnist_resnet``, fitted on first use)."""
    model_name: str | None = None
    """Name clients use for the model; default: the artifact directory's name."""
    host: str = "0.0.0.0"
    """Address the gRPC and HTTP servers bind: all interfaces by default (what a container needs);
    ``127.0.0.1`` keeps it on this machine."""
    port: int = 8001
    """gRPC port (0 = any free port)."""
    http_port: int = 8000
    """HTTP/REST port of the Open Inference Protocol (0 = any free port, -1 = no HTTP)."""
    metrics_port: int = 8002
    """Prometheus metrics HTTP port (0 = any free port, -1 = no metrics endpoint)."""
    metrics_host: str | None = None
    """Address the metrics endpoint binds; unset = ``host``. The endpoint is plain HTTP without
    auth: e.g. ``127.0.0.1`` keeps it local when the gRPC port is public."""
    max_batch_size: int = 64
    """Dynamic batching: largest merged batch (in images)."""
    max_queue_delay_ms: float = 2.0
    """Dynamic batching: longest wait for more requests before a batch runs."""
    max_queue_size: int = 256
    """Requests waiting for a batch; beyond this new requests get RESOURCE_EXHAUSTED."""
    max_images_per_request: int = 1024
    """Most images one request may carry; more get INVALID_ARGUMENT. A request over
    ``max_batch_size`` runs in chunks of that size, interleaved with other requests."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted or sent."""
    geometry: bool = True
    """False serves the bare model (logits and prediction only): the 'guard off' baseline."""
    device: str = "auto"
    """Where the geometry's scans run: auto (a CUDA GPU through torch when present), cpu, cuda."""
    geometry_threads: int = -1
    """Threads one batch's geometry runs on (the shared passes of its two hulls and its union on
    up to two, its margins beside them; more than 2 gain nothing): -1 = every core the process
    may use (its CPU affinity, capped by a cgroup CPU limit such as a Kubernetes
    ``limits.cpu``), 1 = the batch worker alone. Answers do not depend on it."""
    grace_s: float = 10.0
    """On SIGTERM: seconds in-flight requests get to finish."""
    watch: bool = False
    """Reload the served artifact when its ``digest.json`` changes (polled every second); a
    reload is also triggered by SIGHUP and the repository load RPC."""
    log_level: str = "INFO"
    """Python logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case)."""
    log_format: str = "text"
    """Log lines (the access log's included): ``text``, or ``json`` (one object per line)."""
    tls_cert: str | None = None
    """PEM certificate chain of the server: with ``tls_key``, TLS on every port but metrics."""
    tls_key: str | None = None
    """PEM private key (unencrypted) of ``tls_cert``; both or neither."""
    tls_client_ca: str | None = None
    """PEM CA bundle: set = mutual TLS, clients must present a certificate signed by it."""
    auth_token_file: str | None = None
    """Bearer tokens, one per line (``#`` comments): every request but the probes (health,
    ServerLive, ServerReady) needs ``authorization: Bearer <token>``. Re-read when it changes."""
    reflection: bool | None = None
    """gRPC server reflection; unset = on, unless TLS or token auth is on."""
    upstream: str | None = None
    """Upstream mode: ``HOST:PORT`` of the Open Inference Protocol gRPC endpoint (Triton, KServe,
    MLServer) that serves the model (exported by ``guard export triton``); Guard forwards each
    merged batch there instead of running the model itself. Unset = in-process mode."""
    upstream_model: str | None = None
    """The model's name on the upstream; default: the served model name."""
    upstream_timeout_s: float = 10.0
    """Deadline of one forwarded batch; past it the batch's requests get DEADLINE_EXCEEDED."""
    upstream_poll_s: float = 1.0
    """How often the upstream's readiness (ServerReady + ModelReady) is polled; health follows
    it, and a model that comes back is verified again before it serves."""
    upstream_rtol: float = 1e-3
    """Tolerance (relative to the largest magnitude) of the checks that the upstream serves the
    artifact's model: its logits equal ``W·features + b`` in every batch, and its logits and
    features on the artifact's reference inputs equal the stored ones (at start and whenever it
    comes back). Loosen for a GPU upstream with TF32 on."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_level", str(self.log_level).upper())  # frozen: set once

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``GUARD_*`` environment variables, then non-None ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.max_batch_size < 1 or self.max_queue_size < 1:
            raise InputError("max_batch_size and max_queue_size must be >= 1")
        if self.max_queue_delay_ms < 0 or self.grace_s < 0:
            raise InputError("max_queue_delay_ms and grace_s must be >= 0")
        if self.max_images_per_request < 1:
            raise InputError("max_images_per_request must be >= 1")
        if self.max_message_bytes < 1024:
            raise InputError("max_message_bytes must be >= 1024")
        if self.geometry_threads == 0:
            raise InputError("geometry_threads must not be 0 (1 = one thread, -1 = every core)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.log_format not in LOG_FORMATS:
            raise InputError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if self.log_level not in LOG_LEVELS:
            raise InputError(
                f"log_level must be one of {', '.join(LOG_LEVELS)} (any case), got "
                f"{self.log_level.lower()!r}"
            )
        if self.upstream is not None:
            _check_target(self.upstream)
        if not (self.upstream_timeout_s > 0 and self.upstream_poll_s > 0):
            raise InputError("upstream_timeout_s and upstream_poll_s must be > 0")
        if not 0 < self.upstream_rtol < 1:
            raise InputError(f"upstream_rtol must lie in (0, 1), got {self.upstream_rtol}")
        load_tls(self)  # both or neither, readable, the key matches the certificate
        token_auth(self)  # readable, at least one token

    @property
    def reflection_on(self) -> bool:
        """Reflection as set, else on only for a plaintext server without token auth."""
        if self.reflection is not None:
            return self.reflection
        return not (self.tls_cert or self.tls_key or self.auth_token_file)

    @property
    def metrics_bind(self) -> str:
        """The address the metrics endpoint binds (``metrics_host``, else ``host``)."""
        return self.metrics_host or self.host


def _check_target(target: str) -> None:
    """``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address) with a port in 1..65535."""
    host, sep, port = target.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise InputError(f"upstream must be HOST:PORT (e.g. triton:8001), got {target!r}")


def _parse(name: str, type_name: str, raw: str) -> object:
    try:
        if "bool" in type_name:
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
        return raw or None
    except ValueError:
        raise InputError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_name}") from None
