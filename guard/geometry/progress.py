"""Progress bars (tqdm, on stderr) for long work: fitting, scoring many inputs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm


class _Silent:
    """What a disabled bar does: nothing (a disabled tqdm still costs ~0.1 ms to make, which a
    scored batch of one image pays several times)."""

    def update(self, n: float | None = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True) -> Iterator[Any]:
    """A tqdm bar on stderr; ``enabled=False`` gives a bar that prints nothing."""
    if not enabled:
        yield _Silent()
        return
    bar = tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    try:
        yield bar
    finally:
        bar.close()
