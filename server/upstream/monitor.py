"""Whether the upstream can serve, and health that follows it (upstream mode).

The upstream serves when it is ready (``ServerReady`` and ``ModelReady``) and it passed the
reference check (:func:`.check.check_reference`: its outputs on the artifact's reference inputs
are the stored ones). :meth:`UpstreamMonitor.run` polls both every ``upstream_poll_s``; a
forwarded batch that fails reports at once (:meth:`UpstreamMonitor.report`), so health does not
wait for the next poll:

* down (a probe or a batch got ``UNAVAILABLE``): not serving; requests get ``UNAVAILABLE`` at
  once, without being forwarded, until a poll finds it ready and verified again (a restarted
  model server is verified before it serves: it may have come back with another model);
* the wrong model (the reference check, or a batch whose logits are not ``W·features + b``):
  not serving; requests get ``FAILED_PRECONDITION`` without being forwarded; every poll checks
  again, so a model rolled back serves again without a restart of Guard;
* a batch past ``upstream_timeout_s`` fails (``DEADLINE_EXCEEDED``) but changes nothing: a slow
  model server is not a down one; the polls decide.

``on_change(serving)`` is awaited on every change (the app sets gRPC health and readiness).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import UpstreamError, UpstreamMismatch, UpstreamUnavailable
from .client import UpstreamClient

log = logging.getLogger(__name__)


class UpstreamMonitor:
    """The upstream's serving state; ``reference_check()`` raises unless it serves the artifact's
    model (:meth:`.pipeline.UpstreamPipeline.check_reference` of the current pipeline)."""

    def __init__(
        self,
        client: UpstreamClient,
        reference_check: Callable[[], Awaitable[None]],
        on_change: Callable[[bool], Awaitable[None]],
        *,
        poll_s: float = 1.0,
    ) -> None:
        self.client = client
        self.reference_check = reference_check
        self.on_change = on_change
        self.poll_s = poll_s
        self.serving = False
        self.mismatch = False
        self.problem = "not checked yet"
        self._lock = asyncio.Lock()

    def gate(self) -> None:
        """Before a batch is forwarded: refuse it when the upstream is known not to serve."""
        if self.serving:
            return
        if self.mismatch:
            raise UpstreamMismatch(self.problem)
        raise UpstreamUnavailable(
            f"{self.client.describe()} is not serving: {self.problem} (health NOT_SERVING "
            f"until it is back; polled every {self.poll_s:g} s)"
        )

    async def report(self, exc: UpstreamError) -> None:
        """A forwarded batch failed with ``exc``: down or wrong model -> not serving now."""
        if isinstance(exc, UpstreamMismatch):
            await self._set(False, str(exc), mismatch=True)
        elif isinstance(exc, UpstreamUnavailable):
            await self._set(False, str(exc), mismatch=False)

    async def check(self) -> bool:
        """Probe readiness, then run the reference check; the new state (serving or not)."""
        async with self._lock:
            ready, why = await self.client.ready()
            if not ready:
                await self._set(False, why, mismatch=False)
                return False
            try:
                await self.reference_check()
            except UpstreamMismatch as exc:
                await self._set(False, str(exc), mismatch=True)
                return False
            except UpstreamError as exc:
                await self._set(False, str(exc), mismatch=False)
                return False
            await self._set(True, "", mismatch=False)
            return True

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a poll must never end the loop
                log.exception("upstream check failed")
                await self._set(False, f"check failed ({type(exc).__name__}: {exc})", False)
            await asyncio.sleep(self.poll_s)

    async def _set(self, serving: bool, problem: str, mismatch: bool) -> None:
        changed = serving != self.serving or mismatch != self.mismatch
        self.serving, self.problem, self.mismatch = serving, problem, mismatch
        if not changed:
            return
        if serving:
            log.info("%s is serving: health SERVING", self.client.describe())
        elif mismatch:
            log.error("%s: %s; health NOT_SERVING", self.client.describe(), problem)
        else:
            log.warning(
                "%s is not serving (%s): health NOT_SERVING", self.client.describe(), problem
            )
        await self.on_change(serving)
