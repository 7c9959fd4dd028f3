"""The real Triton Inference Server of the upstream tests (:mod:`server.upstream.launcher`):
PyTriton's ``tritonserver`` in the Triton env (``.venv-triton``, ``make triton``), a requirement
of :mod:`tests.tools`: skipped on a bare machine, a failure under ``make test``."""

from __future__ import annotations

from pathlib import Path

from server.upstream.launcher import ROOT, TritonHost, TritonUnavailable, check_triton_env
from tests.tools import missing

__all__ = ["ROOT", "TritonHost", "require_triton"]


def require_triton() -> Path:
    """The Triton env's interpreter, or fail (make test) / skip (bare pytest)."""
    try:
        return check_triton_env()
    except TritonUnavailable as exc:
        missing("the Triton env (.venv-triton)", str(exc))
        raise AssertionError("unreachable") from None
