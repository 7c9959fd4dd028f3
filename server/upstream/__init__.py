"""Upstream mode (``guard serve --upstream HOST:PORT``): the model keeps running on the model
server that already serves it (Triton, KServe, MLServer: any Open Inference Protocol gRPC
endpoint), and Guard, in front of it, forwards each merged batch there, checks that the answers
come from the artifact's model and adds the geometry and the decisions.

* :mod:`.client` — ModelInfer and the readiness probes over ``grpc.aio``, errors mapped;
* :mod:`.check` — is the upstream's model the artifact's (per batch, and on reference inputs);
* :mod:`.monitor` — polls readiness, health follows the upstream;
* :mod:`.pipeline` — the data plane's pipeline for a model that runs upstream;
* ``pytriton_host.py`` — a real Triton serving exported models, for the tests, the demo and the
  benchmark (a script for the Triton env; never imported here).
"""
