"""The gRPC transport: Open Inference Protocol + guard.v1 over one data plane, the standard
health service, server reflection, and a graceful stop.

Health reports NOT_SERVING from the moment the port is bound until :meth:`GrpcServer.set_serving`
(called once the data plane passed its self-check), and NOT_SERVING again as soon as a stop
begins; a stop lets in-flight calls finish (up to the grace period) and refuses new ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ..dataplane import DataPlane
from .gen.guard_v1 import guard_pb2, guard_pb2_grpc
from .gen.inference import grpc_service_pb2, grpc_service_pb2_grpc
from .servicers import GuardServicer, InferenceServicer

log = logging.getLogger(__name__)

#: Our services' full names (what health and reflection report).
SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    guard_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name,
)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def reflection_pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """One pool holding ``files`` and their dependencies, for the reflection service.

    Our generated files live in a private pool (see :mod:`server.grpc.gen`), the health and
    reflection protos in protobuf's default pool; reflection answers from a single pool.
    """
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(fd: FileDescriptor) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add(dep)
        pool.AddSerializedFile(fd.serialized_pb)
        added.add(fd.name)

    for fd in files:
        add(fd)
    return pool


class GrpcServer:
    """The gRPC server of ``dataplane`` on ``host:port`` (0 = any free port)."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.dataplane = dataplane
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.port = 0
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving (health NOT_SERVING until :meth:`set_serving`); the port."""
        opts = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        server = grpc.aio.server(options=opts)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.dataplane), server
        )
        guard_pb2_grpc.add_GuardServiceServicer_to_server(GuardServicer(self.dataplane), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        pool = reflection_pool(
            [
                grpc_service_pb2.DESCRIPTOR,
                guard_pb2.DESCRIPTOR,
                health_pb2.DESCRIPTOR,
                reflection_pb2.DESCRIPTOR,
            ]
        )
        reflection.enable_server_reflection(
            SERVICES + (HEALTH_SERVICE, reflection.SERVICE_NAME), server, pool=pool
        )
        self.port = server.add_insecure_port(f"{self.host}:{self.requested_port}")
        if self.port == 0:
            raise OSError(f"cannot bind {self.host}:{self.requested_port}")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = server
        await server.start()
        log.info("gRPC listening on %s:%d", self.host, self.port)
        return self.port

    async def set_serving(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def _set_health(self, status: int) -> None:
        for name in ("",) + SERVICES:
            await self._health.set(name, status)

    async def stop(self, grace: float | None) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight ones finish (``grace`` s)."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
