"""Code generated from ``proto/`` by ``python -m server.codegen``; never edit it.

The generated ``_pb2`` modules add their descriptors to :data:`POOL`, a private descriptor
pool, not to protobuf's default pool: tritonclient registers its own copy of the Open Inference
Protocol messages (``inference.*``) in the default pool, and one pool cannot hold two files
that define the same names. The wire names (``inference.GRPCInferenceService``, ...) are
unchanged.
Under protobuf's pure-Python implementation (``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``,
never the default) the symbol database still copies every message into the default pool, so
there the two cannot share a process.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
