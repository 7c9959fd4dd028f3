"""The serving layer over :mod:`guard` (arrows point one way: ``server`` imports ``guard``).

* :mod:`server.dataplane`: request model -> images -> dynamic batcher -> pipeline (one model
  run, one geometry pass) -> named outputs; health state. No transport types.
* :mod:`server.grpc`: the gRPC transport (Open Inference Protocol + guard.v1, health,
  reflection), protobuf conversion, the status decorator; ``gen/`` is generated code.
* :mod:`server.errors` (the one error -> status table), :mod:`server.metrics`,
  :mod:`server.settings`, :mod:`server.app` (everything started and stopped together) and
  :mod:`server.cli` (the installed ``guard`` command, adding ``serve`` and ``demo``).
"""
