"""The shutdown contract both transports (gRPC and HTTP) follow, in one place: how long a stop
waits for quiet, and what a refused or cut request is told (README "Shutdown loses nothing
accepted")."""

from __future__ import annotations

#: A stop keeps the port open until no new call has arrived for this long (seconds).
QUIET_S = 0.2
#: How long calls cut at the end of the grace period get to send their UNAVAILABLE (seconds).
CUT_WAIT_S = 2.0
#: Grace given to gRPC's own stop, once our calls are done (health watches, stragglers).
CLOSE_GRACE_S = 0.25

SHUTTING_DOWN = "the server is shutting down and accepts no new requests; retry (another replica)"
CUT = (
    "the server shut down before this request finished (its grace period of {grace:g} s "
    "ended); retry (another replica)"
)
