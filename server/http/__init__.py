"""The HTTP/REST transport: Open Inference Protocol REST v2 (with Triton's binary tensor
extension) over the data plane, as :mod:`server.grpc` is its gRPC transport."""

from .server import HttpServer

__all__ = ["HttpServer"]
