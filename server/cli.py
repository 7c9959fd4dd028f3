"""``guard serve``: run the gRPC service (flags override ``GUARD_*`` environment variables)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from guard.errors import GuardError

from .settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guard serve",
        description="Serve a fitted guard over gRPC: Open Inference Protocol (KServe v2 / "
        "Triton clients), guard.v1 typed API, health, reflection, Prometheus metrics. Every "
        "flag can also be set as an environment variable GUARD_<NAME>.",
    )
    p.add_argument("--artifact", help="artifact directory (default: built-in Fashion-MNIST)")
    p.add_argument("--model-name", help="model name clients use (default: artifact dir name)")
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="gRPC port (default 8001; 0 = any free port)")
    p.add_argument("--metrics-port", type=int,
                   help="Prometheus port (default 8002; 0 = any free, -1 = off)")
    p.add_argument("--max-batch-size", type=int, help="dynamic batching: images per batch (64)")
    p.add_argument("--max-queue-delay-ms", type=float, help="dynamic batching: max wait (2 ms)")
    p.add_argument("--max-queue-size", type=int, help="queued requests before RESOURCE_EXHAUSTED")
    p.add_argument("--max-message-bytes", type=int, help="largest gRPC message (64 MiB)")
    p.add_argument("--no-geometry", dest="geometry", action="store_const", const=False,
                   help="serve the bare model (logits/prediction): the 'guard off' baseline")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="where the geometry's scans run (auto: a CUDA GPU when present)")
    p.add_argument("--grace-s", type=float, help="seconds in-flight requests get on SIGTERM")
    p.add_argument("--log-level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(**vars(args))
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(_serve(settings))
    except GuardError as exc:
        print(f"guard serve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"guard serve: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


async def _serve(settings: Settings) -> None:
    from .app import serve

    await serve(settings)


if __name__ == "__main__":
    sys.exit(main())
