"""The container's health check: exit 0 when the server in this container reports SERVING.

Asks the standard ``grpc.health.v1.Health/Check`` (overall server, service ``""``) on
``127.0.0.1:$GUARD_PORT`` (default 8001) over plaintext: SERVING only once the artifact is loaded
and the self-check inference passed, NOT_SERVING as soon as a shutdown begins. With TLS on
(``GUARD_TLS_CERT`` set) a plaintext call cannot pass the handshake and a client certificate may
be required, so the check falls back to a TCP connect to the port (the process listens); use the
Kubernetes probes of ``deploy/k8s`` (or an exec probe with ``grpc_health_probe -tls``) for more.

Run by the image's ``HEALTHCHECK`` as ``python /opt/guard/healthcheck.py``; prints one line.
"""

from __future__ import annotations

import os
import socket
import sys

TIMEOUT_S = 2.0


def main() -> int:
    port = int(os.environ.get("GUARD_PORT", "8001"))
    target = f"127.0.0.1:{port}"
    if os.environ.get("GUARD_TLS_CERT"):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S).close()
        except OSError as exc:
            print(f"unhealthy: {target} does not accept connections ({exc})")
            return 1
        print(f"listening (TLS on: connect check only): {target}")
        return 0

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {target}: {exc.code().name}: {exc.details()}")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{status}: {target}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
