"""The shutdown contract both transports (gRPC and HTTP) follow, in one place: how long a stop
waits for quiet, and what a refused or cut request is told (README "Shutdown loses nothing
accepted"), and :class:`Drain`, the admission and drain both transports run.

Each accepted request is tracked as a task, so that the end of the grace period can cancel
exactly that work and answer it ``UNAVAILABLE`` instead of dropping the connection. A request
that arrives after the drain began is refused with ``UNAVAILABLE`` ("shutting down") while the
port stays open, until no request has arrived for ``QUIET_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import NotReady

_T = TypeVar("_T")

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


class Drain:
    """Tracks the requests in flight; :meth:`drain` refuses new ones and waits for these."""

    def __init__(self) -> None:
        self.draining = False
        self._grace = 0.0
        self._active: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._last_arrival = 0.0  # time.monotonic() of the last non-probe request

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def cut_message(self) -> str:
        """What a request cut at the end of the grace period is told."""
        return CUT.format(grace=self._grace)

    def add(self, task: asyncio.Task[Any]) -> None:
        """Track an accepted request's task until :meth:`discard`."""
        self._active.add(task)

    def discard(self, task: asyncio.Task[Any]) -> None:
        self._active.discard(task)
        self._cut.discard(task)
        self._changed.set()

    def was_cut(self, task: asyncio.Task[Any]) -> bool:
        """Whether :meth:`drain` cancelled ``task`` (not its client)."""
        return task in self._cut

    def admit(self) -> None:
        """A (non-probe) request arrived: refused with ``UNAVAILABLE`` once draining."""
        self._last_arrival = time.monotonic()
        if self.draining:
            raise NotReady(SHUTTING_DOWN)

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run an accepted request's ``work`` as a tracked task; a task cut at the end of the
        grace period raises ``NotReady`` (503). Cancelling the caller cancels the work."""
        task = asyncio.ensure_future(work)
        self.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self.was_cut(task) and task.cancelled():
                raise NotReady(self.cut_message) from None
            raise
        finally:
            self.discard(task)

    async def drain(self, grace: float) -> int:
        """Refuse new requests, let the ones in flight finish (up to ``grace`` s) and wait until
        none arrived for ``QUIET_S``; cut what is still running then. Returns how many."""
        self.draining = True
        self._grace = grace
        start = time.monotonic()
        deadline = start + grace
        self._last_arrival = max(self._last_arrival, start)
        while True:
            now = time.monotonic()
            quiet_at = self._last_arrival + QUIET_S
            if not self._active and now >= quiet_at:
                return 0
            if now >= deadline:
                break
            await self._wait_change((deadline if self._active else min(deadline, quiet_at)) - now)
        cut = list(self._active)
        self._cut.update(cut)
        for task in cut:
            task.cancel()
        until = time.monotonic() + CUT_WAIT_S
        while self._active and time.monotonic() < until:
            await self._wait_change(until - time.monotonic())
        return len(cut)

    async def _wait_change(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))
        except asyncio.TimeoutError:
            pass
