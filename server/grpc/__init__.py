"""The gRPC transport over :mod:`server.dataplane`: Open Inference Protocol (KServe v2 / Triton)
and guard.v1 servicers, protobuf conversion, the status decorator, health, reflection.

``gen/`` holds the code generated from ``proto/`` by ``python -m server.codegen``.
"""
