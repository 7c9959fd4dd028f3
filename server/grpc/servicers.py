"""gRPC servicers: convert the request, await the data plane, convert the result.

Errors become status codes in :func:`.status.grpc_errors` (from the one table in
:mod:`server.errors`); each call is counted in ``guard_requests_total``.
"""

from __future__ import annotations

from typing import Any

from ..dataplane import DataPlane
from . import convert
from .gen.guard_v1 import guard_pb2_grpc as gpb_grpc
from .gen.inference import grpc_service_pb2 as pb
from .gen.inference import grpc_service_pb2_grpc as pb_grpc
from .status import grpc_errors

Context = Any  # grpc.aio.ServicerContext


class _Base:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    def count(self, rpc: str, outcome: str) -> None:
        self.dp.metrics.count_request(rpc, outcome)


class InferenceServicer(_Base, pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol (KServe v2 / Triton) endpoints."""

    @grpc_errors("ServerLive")
    async def ServerLive(self, request: Any, context: Context) -> Any:
        return pb.ServerLiveResponse(live=self.dp.live())

    @grpc_errors("ServerReady")
    async def ServerReady(self, request: Any, context: Context) -> Any:
        return pb.ServerReadyResponse(ready=self.dp.ready)

    @grpc_errors("ModelReady")
    async def ModelReady(self, request: Any, context: Context) -> Any:
        return pb.ModelReadyResponse(ready=self.dp.model_ready(request.name, request.version))

    @grpc_errors("ServerMetadata")
    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        return convert.server_metadata(self.dp.server_metadata())

    @grpc_errors("ModelMetadata")
    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        return convert.model_metadata(self.dp.model_metadata(request.name, request.version))

    @grpc_errors("ModelInfer")
    async def ModelInfer(self, request: Any, context: Context) -> Any:
        return convert.infer_response(await self.dp.infer(convert.infer_request(request)))

    @grpc_errors("RepositoryIndex")
    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        return convert.repository_index(self.dp.repository_index(request.ready))

    @grpc_errors("RepositoryModelLoad")
    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        await self.dp.load(request.model_name, convert.load_artifact(request))
        return pb.RepositoryModelLoadResponse()

    @grpc_errors("RepositoryModelUnload")
    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        self.dp.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


class GuardServicer(_Base, gpb_grpc.GuardServiceServicer):
    """guard.v1, the typed API: one result per image with the decision and its reasons."""

    @grpc_errors("Classify")
    async def Classify(self, request: Any, context: Context) -> Any:
        images = convert.classify_images(request)
        return convert.classify_response(await self.dp.classify(request.model_name, images))

    @grpc_errors("GetInfo")
    async def GetInfo(self, request: Any, context: Context) -> Any:
        return convert.info_response(self.dp.info(request.model_name))
