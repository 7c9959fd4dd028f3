"""The compiled geometry core (``guard.geometry._native``, C++ in ``guard/geometry/native/``), or
``None`` where it is unavailable.

The core runs the per-query work of the certified scans (the hull's column generation with its
QP, pools and certificate; see :mod:`guard.geometry.hull`) on whole blocks of queries, calling
BLAS for the products. It is built when the package is installed (``pip install``: a C++
compiler is needed; without one the build warns and skips it). Without it every routine runs
its numpy path, which gives the same certified answers, slower; one warning is logged.

``GUARD_NATIVE=0`` (environment) turns the core off (the numpy paths run), e.g. to compare them.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

ENGINES = ("auto", "native", "numpy")


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("GUARD_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "GUARD_NATIVE=0"
    try:  # (by name: the compiled module may be absent, and mypy cannot see into it)
        return importlib.import_module(f"{__package__}._native"), ""
    except ImportError as exc:
        return None, f"{exc}"


core, why_not = _load()
_warned = False
_off = False


@contextmanager
def disabled() -> Iterator[None]:
    """Indices built inside run their numpy paths (the previous version, for benchmarks)."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


def blas() -> dict[str, Any]:
    """BLAS entry points for the core: scipy's ``cython_blas`` capsules (``sgemm``, ``sgemv``,
    ``dgemm``, ``dgemv``)."""
    from scipy.linalg import cython_blas

    capi = cython_blas.__pyx_capi__
    return {name: capi[name] for name in ("sgemm", "sgemv", "dgemm", "dgemv")}


def use(engine: str) -> ModuleType | None:
    """The core for an ``engine`` setting (``auto``: the core when built, else numpy with a
    warning logged once; ``native``: the core or an error; ``numpy``: None)."""
    global _warned
    if engine == "numpy" or (_off and engine == "auto"):
        return None
    if core is None:
        if engine == "native":
            raise ImportError(f"the compiled geometry core is unavailable ({why_not})")
        if not _warned and why_not != "GUARD_NATIVE=0":
            log.warning(
                "compiled geometry core unavailable (%s): using the numpy paths (same "
                "answers, several times slower); reinstall with a C++ compiler present",
                why_not,
            )
        _warned = True
    return core
