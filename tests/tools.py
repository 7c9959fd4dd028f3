"""Real external components the tests start (a container runtime, Prometheus, a Triton server).

``make test`` installs them and sets ``GUARD_TEST_STRICT=1``: there a missing component fails the
test, so CI cannot pass by skipping. A bare ``pytest`` on a machine without them skips, naming
the ``make`` target that provides them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

STRICT = os.environ.get("GUARD_TEST_STRICT") == "1"


def missing(what: str, hint: str) -> None:
    """Fail (strict) or skip: ``what`` is not available; ``hint`` says how to get it."""
    message = f"{what} is not available ({hint})"
    if STRICT:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_command(name: str, hint: str) -> str:
    """The absolute path of the command ``name``, or fail/skip."""
    path = shutil.which(name)
    if path is None:
        missing(f"the command {name!r}", hint)
        raise AssertionError("unreachable")
    return path


def require_path(path: Path, hint: str) -> Path:
    """``path`` if it exists, or fail/skip."""
    if not path.exists():
        missing(str(path), hint)
    return path
