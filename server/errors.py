"""The serving layer's own errors, and THE table that turns any error into a status code.

One row per exception class, most specific first; the first row the exception is an instance of
decides. Each code is transport-neutral (the gRPC canonical code names, which KServe's Open
Inference Protocol also uses) and carries its gRPC status name and its HTTP status beside it
(the mapping of ``google/rpc/code.proto``), so the gRPC transport and an HTTP transport answer
the same error the same way. Anything not in the table is a bug: ``INTERNAL``, logged by the
transport, never shown to the client in detail.

Client-supplied text (a model name, an output name) is quoted through :func:`echo`, which cuts it
to :data:`MAX_ECHO` characters, and every status message goes out through :func:`status_message`,
which bounds the whole message: a 10 KB model name must give NOT_FOUND with a readable message,
not a status whose metadata exceeds the transport's limit.

No transport is imported here (the data plane raises these errors).
"""

from __future__ import annotations

import enum

from guard.errors import ArtifactError, GuardError, InputError, ModelError, NotFittedError
from guard.geometry.errors import GeometryError


class ModelNotFound(GuardError):
    """A request names a model this server does not serve."""


class Overloaded(GuardError):
    """The batching queue is full."""


class NotReady(GuardError):
    """The server is starting or shutting down, or the request needs what it has disabled."""


class LoadRefused(GuardError):
    """A (re)load was refused: the artifact failed to load or its self-check; the old model
    keeps serving."""


class Unauthenticated(GuardError):
    """The request carries no valid credentials (bearer token); the message never quotes them."""


class UpstreamError(GuardError):
    """Upstream mode: forwarding a batch to the model server failed. It fails every request of
    the batch (the batcher does not retry them one by one: the cause is not one request's)."""


class UpstreamUnavailable(UpstreamError):
    """The upstream model server is down, unreachable, overloaded or has no such model; the
    message carries its own status and text."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within ``upstream_timeout_s``."""


class UpstreamMismatch(UpstreamError):
    """The model behind the proxy is not the one the artifact was fitted on: its logits are not
    ``W·features + b``, or its outputs on the reference inputs differ from the stored ones."""


class Code(enum.Enum):
    """Transport-neutral status: ``(gRPC status name, HTTP status)``."""

    OK = ("OK", 200)
    INVALID_ARGUMENT = ("INVALID_ARGUMENT", 400)
    FAILED_PRECONDITION = ("FAILED_PRECONDITION", 400)
    UNAUTHENTICATED = ("UNAUTHENTICATED", 401)
    NOT_FOUND = ("NOT_FOUND", 404)
    RESOURCE_EXHAUSTED = ("RESOURCE_EXHAUSTED", 429)
    INTERNAL = ("INTERNAL", 500)
    UNAVAILABLE = ("UNAVAILABLE", 503)
    DEADLINE_EXCEEDED = ("DEADLINE_EXCEEDED", 504)

    @property
    def grpc_name(self) -> str:
        """The ``grpc.StatusCode`` member name."""
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]

    @property
    def outcome(self) -> str:
        """Bounded label value for the request counter (``ok``, ``invalid_argument``, ...)."""
        return self.name.lower()


# Most specific first: the first matching class decides the code.
STATUS: tuple[tuple[type[BaseException], Code], ...] = (
    (Unauthenticated, Code.UNAUTHENTICATED),
    (UpstreamUnavailable, Code.UNAVAILABLE),
    (UpstreamTimeout, Code.DEADLINE_EXCEEDED),
    (UpstreamMismatch, Code.FAILED_PRECONDITION),
    (UpstreamError, Code.UNAVAILABLE),
    (InputError, Code.INVALID_ARGUMENT),
    (GeometryError, Code.INVALID_ARGUMENT),  # the numerics' own ValueError: bad input as well
    (ModelNotFound, Code.NOT_FOUND),
    (Overloaded, Code.RESOURCE_EXHAUSTED),
    (NotReady, Code.UNAVAILABLE),
    (ModelError, Code.FAILED_PRECONDITION),
    (ArtifactError, Code.FAILED_PRECONDITION),
    (NotFittedError, Code.FAILED_PRECONDITION),
    (GuardError, Code.FAILED_PRECONDITION),
)


#: Longest client-supplied text quoted in a message (characters, before the ellipsis).
MAX_ECHO = 200
#: Longest status message sent to a client (gRPC carries it in a trailer; HTTP in the body).
MAX_MESSAGE = 1000


def echo(text: object, limit: int = MAX_ECHO) -> str:
    """``repr`` of client-supplied ``text``, cut to ``limit`` characters + "…" (and its length)."""
    s = str(text)
    if len(s) <= limit:
        return repr(s)
    return f"{s[:limit]!r}… ({len(s)} characters)"


def status_message(exc: BaseException) -> str:
    """The message a client sees for ``exc`` (a known error), at most :data:`MAX_MESSAGE` long."""
    msg = str(exc)
    if len(msg) <= MAX_MESSAGE:
        return msg
    return msg[:MAX_MESSAGE] + "… (truncated)"


def code_of(exc: BaseException) -> Code:
    """The status of ``exc``: its table row, or ``INTERNAL`` for anything unexpected."""
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return Code.INTERNAL
