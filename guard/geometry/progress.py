"""Progress bars (tqdm, on stderr) for long work: fitting, scoring many inputs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


@contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True) -> Iterator[tqdm]:
    """A tqdm bar on stderr; ``enabled=False`` gives a bar that prints nothing."""
    bar = tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    try:
        yield bar
    finally:
        bar.close()
