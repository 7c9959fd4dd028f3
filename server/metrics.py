"""Prometheus metrics, declared once. Names follow the Prometheus conventions (``_total`` for
counters, base units in names); label values are bounded (RPC names, outcome codes, reasons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_DISTANCE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
_AMBIGUITY = (-20.0, -10.0, -5.0, -2.0, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """All metrics of one server, in their own registry (several servers can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "guard_requests", "RPCs by method and outcome", ["rpc", "outcome"], registry=r
        )
        self.images = Counter("guard_images", "Images classified", registry=r)
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

    def count_request(self, rpc: str, outcome: str) -> None:
        self.requests.labels(rpc=rpc, outcome=outcome).inc()

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose ``/metrics`` over HTTP; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_address[1])

    def close(self) -> None:
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()
