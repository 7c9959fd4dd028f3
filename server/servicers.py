"""gRPC servicers: convert the request, await the batcher, convert the result."""

from __future__ import annotations

from typing import TYPE_CHECKING

import server.gen  # noqa: F401
from guard import __version__
from guard_v1 import guard_pb2_grpc as gpb_grpc
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from . import convert
from .errors import NotReady, grpc_errors

if TYPE_CHECKING:
    from .app import GuardServer


class _Base:
    def __init__(self, srv: GuardServer) -> None:
        self.srv = srv

    def count(self, rpc: str, outcome: str) -> None:
        self.srv.metrics.count_request(rpc, outcome)


class InferenceServicer(_Base, pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol (KServe v2 / Triton) endpoints."""

    @grpc_errors("ServerLive")
    async def ServerLive(self, request, context):  # noqa: ANN001, N802
        return pb.ServerLiveResponse(live=True)

    @grpc_errors("ServerReady")
    async def ServerReady(self, request, context):  # noqa: ANN001, N802
        return pb.ServerReadyResponse(ready=self.srv.ready)

    @grpc_errors("ModelReady")
    async def ModelReady(self, request, context):  # noqa: ANN001, N802
        return pb.ModelReadyResponse(ready=self.srv.ready and request.name == self.srv.model_name)

    @grpc_errors("ServerMetadata")
    async def ServerMetadata(self, request, context):  # noqa: ANN001, N802
        return pb.ServerMetadataResponse(name="guard", version=__version__, extensions=[])

    @grpc_errors("ModelMetadata")
    async def ModelMetadata(self, request, context):  # noqa: ANN001, N802
        self.srv.check_model(request.name)
        return convert.model_metadata(self.srv.guard, self.srv.model_name, self.srv.input_name,
                                      self.srv.settings.geometry)

    @grpc_errors("ModelInfer")
    async def ModelInfer(self, request, context):  # noqa: ANN001, N802
        srv = self.srv
        srv.check_model(request.model_name)
        names = convert.requested_outputs(request, srv.settings.geometry)
        x = convert.infer_request_to_images(srv.guard, srv.input_name, request)
        result = await srv.submit(x)
        return convert.infer_response(srv.model_name, request, names, result)


class GuardServicer(_Base, gpb_grpc.GuardServiceServicer):
    """Typed API: one result per image with the decision and its reasons."""

    @grpc_errors("Classify")
    async def Classify(self, request, context):  # noqa: ANN001, N802
        srv = self.srv
        srv.check_model(request.model_name, allow_empty=True)
        if not srv.settings.geometry:
            raise NotReady("Classify needs the geometry, which this server has disabled")
        x = convert.classify_request_to_images(srv.guard, request)
        result = await srv.submit(x)
        return convert.classify_response(srv.guard, srv.model_name, result)

    @grpc_errors("GetInfo")
    async def GetInfo(self, request, context):  # noqa: ANN001, N802
        self.srv.check_model(request.model_name, allow_empty=True)
        return convert.info_response(self.srv.guard, self.srv.model_name,
                                     self.srv.settings.geometry)
