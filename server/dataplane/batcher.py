"""Dynamic batching: concurrent requests are merged into batches of at most ``max_batch_size``
images (waiting up to ``max_delay_s`` for more), run one at a time in a worker thread (off the
event loop).

* Bounded and fair: a request larger than a batch runs in chunks. After each chunk it takes its
  next turn behind the requests that arrived meanwhile (round robin), so a small request waits
  for the batch in flight, not for a large request to finish. A request that fits in one batch
  is never split.
* Abandoned requests stop: when the caller's task is cancelled (a gRPC cancel or deadline), the
  request's chunks that have not run yet never run.
* Errors stay with their request: an image that fails in the model fails its own request only
  (see :class:`~.pipeline.BatchRun`), and a batch that fails as a whole is rerun request by
  request, so that only the request that caused it fails. An :class:`~server.errors.UpstreamError`
  (the upstream model server failed, timed out or is the wrong model) is no request's fault: it
  fails every request of the batch at once, with no rerun (a timeout is not waited for twice).
* Hot swap: :meth:`swap` replaces the run function between batches, and only when no request
  is part-way through its chunks (until then no new request starts), so every request is
  answered by exactly one of them.
* The queue is bounded: a request that finds ``max_queue`` requests waiting is refused at once
  (``Overloaded``) instead of piling up latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from guard.errors import InputError

from ..errors import NotReady, Overloaded, UpstreamError
from .pipeline import BatchResult, BatchRun, Pipeline

log = logging.getLogger(__name__)

_R = TypeVar("_R")


@dataclass(eq=False)  # compared by identity: a request is in the waiting list at most once
class _Request:
    x: np.ndarray
    future: asyncio.Future[BatchResult]
    sphere: bool = True
    """Whether its results need the spherical hull's distance (a batch computes it when one
    of its requests does)."""
    enqueued: float = field(default_factory=time.perf_counter)
    scheduled: int = 0
    """Images given to batches so far (chunks run in order, one batch at a time)."""
    parts: list[BatchResult] = field(default_factory=list)

    @property
    def left(self) -> int:
        return len(self.x) - self.scheduled


@dataclass(frozen=True)
class _Chunk:
    """Images ``lo:hi`` of one request, in one batch."""

    request: _Request
    lo: int
    hi: int

    @property
    def images(self) -> np.ndarray:
        return self.request.x[self.lo : self.hi]


class Batcher:
    """Merges concurrent :meth:`submit` calls into batches for ``run`` (one worker thread)."""

    def __init__(
        self,
        run: Callable[[np.ndarray], BatchRun],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        on_queue_time: Callable[[float], None] = lambda s: None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._waiting: list[_Request] = []  # requests with images left to run, in turn order
        self._running: list[_Chunk] = []  # the batch in the worker
        self._arrived = asyncio.Event()
        self._on_queue_time = on_queue_time
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-batch")
        self._task: asyncio.Task | None = None
        self._closing = False
        self._next_run: Callable[[np.ndarray], BatchRun] | None = None
        self._swapped: list[asyncio.Future[None]] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="guard-batcher")

    async def submit(self, x: np.ndarray, *, sphere: bool = True) -> BatchResult:
        """Queue ``x`` (B images) and wait for its results (the spherical hull's distances
        only with ``sphere``: NaN otherwise, unless another request of its batch asked).

        Cancelling the caller drops the images of ``x`` that have not run yet.
        """
        if self._closing or self._task is None:
            raise NotReady("the server is not accepting requests (starting or shutting down)")
        if len(self._waiting) >= self.max_queue:
            raise Overloaded(
                f"server overloaded: {self.max_queue} requests already queued; retry later"
            )
        req = _Request(x, asyncio.get_running_loop().create_future(), sphere)
        self._waiting.append(req)
        self._arrived.set()
        try:
            return await req.future
        except asyncio.CancelledError:  # the caller went away: nothing more runs for it
            req.future.cancel()
            if req in self._waiting:
                self._waiting.remove(req)
            raise

    async def run_in_worker(self, fn: Callable[[np.ndarray], _R], x: np.ndarray) -> _R:
        """``fn(x)`` in the worker thread, between batches (e.g. the self-check)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, x)

    def swap(self, run: Callable[[np.ndarray], BatchRun]) -> asyncio.Future[None]:
        """Run the next batches with ``run``; done once it is installed: at once, or, when
        requests are part-way through their chunks, once their last chunks ran on the old
        function (no new request starts meanwhile, so the wait is bounded). The batch in
        flight always finishes on the old one."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_run = run
        self._swapped.append(done)
        self._try_swap()
        return done

    def _try_swap(self) -> None:
        if self._next_run is None:
            return
        running = [c.request for c in self._running]
        if any(r.scheduled and r.left and not r.future.done() for r in self._waiting + running):
            return  # a split request would be answered by two models: after its last chunk
        self._run, self._next_run = self._next_run, None
        for done in self._swapped:
            if not done.done():
                done.set_result(None)
        self._swapped.clear()

    # ---------------------------------------------------------------- forming batches
    async def _collect(self) -> list[_Chunk]:
        """The next batch: wait for a request, then up to ``max_delay_s`` for it to fill."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = time.perf_counter() + self.max_delay_s
        chunks: list[_Chunk] = []
        n = 0
        while True:
            n = self._fill(chunks, n)
            if n >= self.max_batch_size or self._waiting:  # full, or what waits does not fit
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:  # waiting on an Event (not a queue) cannot lose a request when it times out
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return chunks

    def _fill(self, chunks: list[_Chunk], n: int) -> int:
        """Add the waiting requests' next images to ``chunks`` (``n`` images so far), in turn
        order, up to ``max_batch_size``; returns the new number of images."""
        self._try_swap()
        now = time.perf_counter()
        for req in list(self._waiting):
            space = self.max_batch_size - n
            if space <= 0:
                break
            if req.future.done():  # cancelled by its caller
                self._waiting.remove(req)
                continue
            if self._next_run is not None and not req.scheduled:
                continue  # a swap waits for the split requests: start no new one before it
            if space < req.left <= self.max_batch_size:
                continue  # fits a batch of its own: not split, it goes first in the next one
            k = min(req.left, space)
            if req.scheduled == 0:
                self._on_queue_time(now - req.enqueued)
            chunks.append(_Chunk(req, req.scheduled, req.scheduled + k))
            req.scheduled += k
            n += k
            self._waiting.remove(req)
        return n

    # ---------------------------------------------------------------- running them
    async def _loop(self) -> None:
        while True:
            chunks = await self._collect()
            if not chunks:
                continue
            self._running = chunks
            await self._run_batch(chunks, self._run)
            self._running = []
            # a request with images left takes its next turn after those that arrived meanwhile
            for c in chunks:
                if c.request.left and not c.request.future.done():
                    self._waiting.append(c.request)
            self._try_swap()

    async def _run_batch(
        self, chunks: list[_Chunk], run_fn: Callable[[np.ndarray], BatchRun]
    ) -> None:
        live = [c for c in chunks if not c.request.future.done()]
        if not live:
            return
        x = live[0].images if len(live) == 1 else np.concatenate([c.images for c in live])
        try:
            if isinstance(run_fn, Pipeline):  # its model run may await (upstream mode)
                sphere = any(c.request.sphere for c in live)
                run = await run_fn.arun(x, self.run_in_worker, sphere=sphere)
            else:
                run = await self.run_in_worker(run_fn, x)
        except Exception as exc:  # noqa: BLE001 - it belongs to the request that caused it
            if len(live) == 1 or isinstance(exc, UpstreamError):
                for c in live:
                    _fail(c.request, exc)
                return
            log.warning(
                "a batch of %d requests failed (%s: %s); rerunning them one at a time",
                len(live),
                type(exc).__name__,
                exc,
            )
            for c in live:
                await self._run_batch([c], run_fn)
            return
        lo = 0
        for c in live:
            hi = lo + c.hi - c.lo
            _deliver(c, run, lo, hi)
            lo = hi

    async def close(self) -> None:
        """Stop the worker (after the gRPC server has let in-flight requests finish); requests
        still waiting are answered ``NotReady``."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for req in self._waiting + [c.request for c in self._running]:
            _fail(req, NotReady("the server is shutting down"))
        self._waiting.clear()
        for done in self._swapped:
            if not done.done():
                done.set_exception(NotReady("the server is shutting down"))
        self._swapped.clear()
        self._executor.shutdown(wait=True)


def _deliver(c: _Chunk, run: BatchRun, lo: int, hi: int) -> None:
    """Give chunk ``c`` its results, batch rows ``lo:hi`` of ``run``."""
    req = c.request
    if req.future.done():  # cancelled by its caller, or an earlier chunk failed
        return
    try:
        req.parts.append(run.part(lo, hi, first=c.lo))
    except InputError as exc:  # one of its own images failed in the model
        req.future.set_exception(exc)
        return
    if c.hi == len(req.x):
        req.future.set_result(BatchResult.concat(req.parts))


def _fail(req: _Request, exc: BaseException) -> None:
    if not req.future.done():
        req.future.set_exception(exc)
