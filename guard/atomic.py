"""Write a directory atomically: build it under a temporary name beside its target and rename it
into place only once every file is written, so a reader never sees a half-written directory and a
failed write leaves the previous one untouched."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out``; on a clean exit replace ``out`` (if it
    exists) with it, on an exception remove it and re-raise.

    The directory gets the permissions ``mkdir`` would give it (``0o777`` less the umask), not
    ``mkdtemp``'s private ``0o700``: an artifact written by root stays readable by the non-root
    user a container runs as.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
