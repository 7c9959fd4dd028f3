"""Dynamic batching: concurrent requests are merged up to ``max_batch_size`` images or
``max_delay_s`` of waiting, then run as one batch in a worker thread (off the event loop).

The queue is bounded: a request that finds it full is refused at once (``Overloaded``) instead of
piling up latency. Requests are validated before they are queued, so one batch never fails
because of another client's bad input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import NotReady, Overloaded
from .pipeline import BatchResult


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merges concurrent :meth:`submit` calls into batches for ``run`` (one worker thread)."""

    def __init__(
        self,
        run: Callable[[np.ndarray], BatchResult],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        on_queue_time: Callable[[float], None] = lambda s: None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._arrived = asyncio.Event()
        self._on_queue_time = on_queue_time
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-batch")
        self._task: asyncio.Task | None = None
        self._closing = False
        self._carry: _Item | None = None  # taken from the queue, did not fit: runs next

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="guard-batcher")

    async def submit(self, x: np.ndarray) -> BatchResult:
        """Queue ``x`` (B images) and wait for its results."""
        if self._closing or self._task is None:
            raise NotReady("the server is not accepting requests (starting or shutting down)")
        item = _Item(x, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Overloaded(
                f"server overloaded: {self._queue.maxsize} requests already queued; retry later"
            ) from None
        self._arrived.set()
        return await item.future

    async def _collect(self) -> list[_Item]:
        if self._carry is not None:
            items, self._carry = [self._carry], None
        else:
            items = [await self._queue.get()]
        n = len(items[0].x)  # a request larger than max_batch_size runs alone, unsplit
        deadline = time.perf_counter() + self.max_delay_s
        while n < self.max_batch_size:
            if not self._queue.empty():
                nxt = self._queue.get_nowait()
                if n + len(nxt.x) > self.max_batch_size:  # would overshoot: it starts the next
                    self._carry = nxt
                    break
                items.append(nxt)
                n += len(nxt.x)
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:  # waiting on an Event (not the queue) cannot lose an item when it times out
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return items

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            now = time.perf_counter()
            for it in items:
                self._on_queue_time(now - it.enqueued)
            x = items[0].x if len(items) == 1 else np.concatenate([it.x for it in items])
            try:
                result = await loop.run_in_executor(self._executor, self._run, x)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            lo = 0
            for it in items:
                hi = lo + len(it.x)
                if not it.future.done():  # the client may have gone away
                    it.future.set_result(result[lo:hi])
                lo = hi

    async def close(self) -> None:
        """Stop the worker (after the gRPC server has let in-flight requests finish)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)
