"""The installed ``guard`` command: the core's commands (:mod:`guard.cli`) plus ``guard serve``
and ``guard demo`` from this layer, added through :func:`guard.cli.main`'s ``extra`` hook.

``guard serve`` flags override ``GUARD_*`` environment variables (:class:`~.settings.Settings`).
The serving stack (grpc, prometheus_client) is imported only when ``serve`` runs, so
``guard fit`` and the others start without it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import fields
from typing import TYPE_CHECKING

from guard import cli as guard_cli

from . import demo
from .settings import Settings

if TYPE_CHECKING:
    from .app import GuardServer

EXIT_USAGE = 2


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`Settings` field; None = not given (the environment decides)."""
    p.add_argument("--artifact", help="artifact directory (default: built-in Fashion-MNIST)")
    p.add_argument("--model-name", help="model name clients use (default: artifact dir name)")
    p.add_argument("--host", help="address to bind (default 0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, help="gRPC port (default 8001; 0 = any free port)")
    p.add_argument(
        "--http-port",
        type=int,
        help="HTTP/REST port, Open Inference Protocol v2 (default 8000; 0 = any free, -1 = off)",
    )
    p.add_argument(
        "--metrics-port", type=int, help="Prometheus port (default 8002; 0 = any free, -1 = off)"
    )
    p.add_argument("--metrics-host", help="address the metrics port binds (default: --host)")
    p.add_argument("--max-batch-size", type=int, help="dynamic batching: images per batch (64)")
    p.add_argument("--max-queue-delay-ms", type=float, help="dynamic batching: max wait (2 ms)")
    p.add_argument("--max-queue-size", type=int, help="queued requests before RESOURCE_EXHAUSTED")
    p.add_argument("--max-images-per-request", type=int, help="images one request may carry (1024)")
    p.add_argument("--max-message-bytes", type=int, help="largest gRPC message (64 MiB)")
    p.add_argument(
        "--no-geometry",
        dest="geometry",
        action="store_const",
        const=False,
        help="serve the bare model (logits/prediction): the 'guard off' baseline",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where the geometry's scans run (auto: a CUDA GPU when present)",
    )
    p.add_argument(
        "--geometry-threads",
        type=int,
        help="threads one batch's geometry runs on (default -1: every core; 1: one thread)",
    )
    p.add_argument("--grace-s", type=float, help="seconds in-flight requests get on SIGTERM")
    p.add_argument(
        "--watch",
        action="store_const",
        const=True,
        help="reload the artifact when its digest.json changes (polled every second)",
    )
    p.add_argument(
        "--log-level", help="logging level: DEBUG, INFO (default), WARNING, ERROR, CRITICAL"
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines, the access log's included: text (default) or json (one object a line)",
    )
    p.add_argument("--tls-cert", help="PEM server certificate chain: TLS on (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (unencrypted)")
    p.add_argument(
        "--tls-client-ca", help="PEM CA bundle: mutual TLS, clients need a certificate it signed"
    )
    p.add_argument(
        "--auth-token-file",
        help="bearer tokens, one per line: requests need 'authorization: Bearer <token>' "
        "(re-read when the file changes)",
    )
    p.add_argument(
        "--reflection",
        action=argparse.BooleanOptionalAction,
        help="gRPC server reflection (default: on, unless TLS or token auth is on)",
    )
    p.add_argument(
        "--upstream",
        metavar="HOST:PORT",
        help="upstream mode: forward each batch to this Open Inference Protocol gRPC endpoint "
        "(Triton, KServe) serving the model from `guard export triton` (default: run the "
        "model in-process)",
    )
    p.add_argument(
        "--upstream-model", help="the model's name on the upstream (default: --model-name)"
    )
    p.add_argument(
        "--upstream-timeout-s",
        type=float,
        help="deadline of one forwarded batch (10 s); past it: DEADLINE_EXCEEDED",
    )
    p.add_argument(
        "--upstream-poll-s", type=float, help="how often the upstream's readiness is checked (1 s)"
    )
    p.add_argument(
        "--upstream-rtol",
        type=float,
        help="tolerance of the checks that the upstream serves the artifact's model (1e-3)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The ``extra`` hook of :func:`guard.cli.build_parser`: ``serve`` and ``demo``."""
    s = sub.add_parser(
        "serve",
        help="serve a fitted guard over gRPC",
        description="Serve a fitted guard over gRPC: Open Inference Protocol (KServe v2 / "
        "Triton clients), guard.v1 typed API, health, reflection, Prometheus metrics. Every "
        "flag can also be set as an environment variable GUARD_<NAME>.",
    )
    add_serve_arguments(s)
    s.set_defaults(func=cmd_serve)
    d = sub.add_parser(
        "demo",
        help="serve the built-in Fashion-MNIST guard and query it with tritonclient",
        description=demo.DESCRIPTION,
    )
    demo.add_arguments(d)
    d.set_defaults(func=demo.cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    return guard_cli.build_parser(add_commands)


def main(argv: list[str] | None = None) -> int:
    """The ``guard`` command."""
    return guard_cli.main(argv, extra=add_commands)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(**{f.name: getattr(args, f.name, None) for f in fields(Settings)})
    from .accesslog import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings))
    except OSError as exc:  # e.g. the port is taken
        print(f"guard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 0
    return 0


async def _serve(settings: Settings) -> None:
    from .app import serve  # the serving stack: only now

    await serve(settings, announce=_announce)


def _announce(srv: GuardServer) -> None:
    s = srv.settings
    metrics = (
        f"metrics http://{s.metrics_bind}:{srv.metrics_port}/metrics"
        if srv.metrics_port >= 0
        else "metrics off"
    )
    http = (
        f"HTTP/REST (Open Inference Protocol v2) on {s.host}:{srv.http_port}"
        if srv.http_port >= 0
        else "HTTP off"
    )
    tls = ("mutual TLS" if s.tls_client_ca else "TLS") if s.tls_cert else "plaintext"
    extras = [tls] + (["token auth"] if s.auth_token_file else [])
    if srv.upstream is not None:
        state = "serving" if srv.ready else "NOT_SERVING until it is ready"
        extras.append(f"model on {srv.upstream.describe()}: {state}")
    print(
        f"guard: serving {srv.model_name!r} on {s.host}:{srv.port} (gRPC: Open Inference "
        f"Protocol + guard.v1, health{', reflection' if s.reflection_on else ''}; "
        f"{', '.join(extras)}); {http}; {metrics}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
