"""Prometheus metrics, declared once. Names follow the Prometheus conventions (``_total`` for
counters, base units in names); label values are bounded (RPC names, outcome codes, reasons).

The HTTP endpoint serves ``/metrics`` only (anything else is 404, so that a probe pointed at the
wrong port cannot mistake it for a health endpoint); the registry also carries the standard
``process_*`` and ``python_info`` metrics of this process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_DISTANCE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
_AMBIGUITY = (-20.0, -10.0, -5.0, -2.0, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: The one path the metrics endpoint serves.
METRICS_PATH = "/metrics"


class Metrics:
    """All metrics of one server, in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes..
        PlatformCollector(registry=r)  # python_info
        self.requests = Counter(
            "guard_requests", "RPCs by method and outcome", ["rpc", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "guard_request_duration_seconds",
            "Time an RPC spends in the server, from its decoding to its response, by method",
            ["rpc"],
            buckets=_LATENCY,
            registry=r,
        )
        self.images = Counter("guard_images", "Images classified", registry=r)
        self.reloads = Counter(
            "guard_reloads", "Artifact reloads by outcome (ok, refused)", ["outcome"], registry=r
        )
        self.abstentions = Counter(
            "guard_abstentions", "Abstentions by reason", ["reason"], registry=r
        )
        self.flags = Counter("guard_flags", "Raised flags by kind", ["flag"], registry=r)
        self.ambiguity = Histogram(
            "guard_ambiguity", "d_min - hull distance per image", buckets=_AMBIGUITY, registry=r
        )
        self.d_min = Histogram(
            "guard_margin_min",
            "Distance to the nearest decision boundary",
            buckets=_DISTANCE,
            registry=r,
        )
        self.hull = Histogram(
            "guard_hull_distance",
            "Distance to the training hull (upper bound)",
            buckets=_DISTANCE,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "guard_queue_seconds",
            "Time a request waited for its batch",
            buckets=_LATENCY,
            registry=r,
        )
        self.model_seconds = Histogram(
            "guard_model_seconds", "Model run per batch", buckets=_LATENCY, registry=r
        )
        self.geometry_seconds = Histogram(
            "guard_geometry_seconds", "Geometry + decision per batch", buckets=_LATENCY, registry=r
        )
        self.batch_size = Histogram(
            "guard_batch_size", "Images per merged batch", buckets=_BATCH, registry=r
        )
        self.in_flight = Gauge(
            "guard_in_flight_requests",
            "Inference requests in the data plane (waiting for a batch or running), all "
            "transports: the load signal of the autoscaler (deploy/k8s)",
            registry=r,
        )
        # upstream mode (``guard serve --upstream``): the forwarded ModelInfer calls
        self.upstream_seconds = Histogram(
            "guard_upstream_seconds",
            "Upstream ModelInfer round trip per forwarded batch (failed calls included)",
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream_errors = Counter(
            "guard_upstream_errors",
            "Batches that failed because of the upstream, by gRPC status name: the upstream "
            "call's own status (UNAVAILABLE, DEADLINE_EXCEEDED, ...), FAILED_PRECONDITION when "
            "its answer is not the artifact's model; batches refused without being forwarded "
            "while it is down or wrong count with the status they get",
            ["code"],
            registry=r,
        )
        self._http: WSGIServer | None = None

    def count_request(self, rpc: str, outcome: str) -> None:
        self.requests.labels(rpc=rpc, outcome=outcome).inc()

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose ``/metrics`` over HTTP (in a daemon thread); returns the bound port."""
        server = _http_server(host, port, _metrics_only(make_wsgi_app(self.registry)))
        threading.Thread(target=server.serve_forever, daemon=True, name="guard-metrics").start()
        self._http = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _metrics_only(app: _WsgiApp) -> _WsgiApp:
    """``app`` at ``GET /metrics`` (or HEAD); 404 for any other path, 405 for other methods."""

    def only(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: this port serves {METRICS_PATH} only\n".encode()]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed",
                [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD")],
            )
            return [b"method not allowed\n"]
        return app(environ, start_response)

    return only


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


def _http_server(host: str, port: int, app: _WsgiApp) -> WSGIServer:
    """A threading WSGI server bound to ``host:port`` (IPv4 or IPv6, as ``host`` resolves)."""
    family = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0][0]
    server_class = type("MetricsServer", (_ThreadingWSGIServer,), {"address_family": family})
    return make_server(host, port, app, server_class, handler_class=_QuietHandler)
