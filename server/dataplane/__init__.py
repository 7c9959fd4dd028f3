"""The transport-free data plane: request model -> images -> batcher -> pipeline -> outputs.

Nothing here imports grpc or protobuf; the transports in ``server/grpc`` (and later HTTP)
convert their wire types to :mod:`.types` and back, as MLServer and KServe split them.
"""

from .dataplane import ClassifyResult, DataPlane
from .model import ServedModel
from .pipeline import BatchResult
from .types import (
    InferenceRequest,
    InferenceResponse,
    ModelInfo,
    ModelMetadata,
    ModelState,
    OutputTensor,
    RequestTensor,
    ServerMetadata,
    TensorMetadata,
)

__all__ = [
    "BatchResult",
    "ClassifyResult",
    "DataPlane",
    "InferenceRequest",
    "InferenceResponse",
    "ModelInfo",
    "ModelMetadata",
    "ModelState",
    "OutputTensor",
    "RequestTensor",
    "ServedModel",
    "ServerMetadata",
    "TensorMetadata",
]
