"""A work queue of run keys, the way controller-runtime drives reconcilers, on kopf's event loop.

- ``add(key)``: reconcile soon (a watch event said something changed). A key waits in the queue at
  most once, however many events arrive for it meanwhile.
- ``add_after(key, seconds)``: reconcile then, unless something makes it due earlier. One timer task
  sleeps until the earliest due time; nothing wakes for runs that are not due.
- One reconcile per key at a time (the phase has one writer): an event for a key being reconciled
  marks it dirty, and it is queued again once that reconcile ends.

The work itself (a blocking function of the key, returning the seconds until it is due again or None)
runs in a small thread pool. Every method is called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger("kiln.workqueue")

K = TypeVar("K", bound=Hashable)

ERROR_RETRY_S = 30.0
"""When the work raised something unexpected: look again after this long (kopf's retry, made explicit)."""


class WorkQueue(Generic[K]):
    def __init__(self, work: Callable[[K], float | None], workers: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._work, self._workers, self._clock = work, workers, clock
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0  # heap tie-breaker: keys need not be orderable among themselves
        self._timer_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")

    def add(self, key: K) -> None:
        """Reconcile ``key`` as soon as a worker is free (its pending due time is dropped)."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._due.pop(key, None)
        if key in self._queued:
            return
        self._queued.add(key)
        self._ready.put_nowait(key)

    def add_after(self, key: K, seconds: float) -> None:
        """Reconcile ``key`` after ``seconds`` unless it is queued or due earlier already."""
        when = self._clock() + seconds
        if key in self._queued or self._due.get(key, float("inf")) <= when:
            return
        self._due[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        self._timer_changed.set()

    def forget(self, key: K) -> None:
        """Drop the due time of a key that is gone (a queued entry finds nothing to do)."""
        self._due.pop(key, None)

    def due(self, key: K) -> float | None:
        """Seconds until ``key`` is due (None when not scheduled); for tests and the bench."""
        when = self._due.get(key)
        return None if when is None else when - self._clock()

    def queued(self, key: K) -> bool:
        """Whether ``key`` waits for a worker now (or will, right after its running reconcile)."""
        return key in self._queued or key in self._dirty

    def pending(self) -> int:
        """Keys queued, running or scheduled."""
        return len(self._queued | self._running | set(self._due))

    def start(self) -> None:
        """Start the timer and the workers (once; later calls do nothing). They run in the context of the
        caller, so call it from a kopf handler: that context holds kopf's event poster."""
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._timer(), name="workqueue timer")]
        self._tasks += [asyncio.create_task(self._worker(), name=f"workqueue worker {i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _pop_due(self) -> float | None:
        """Queue every key whose time has come; return seconds until the next one (None: none left)."""
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == when:  # else stale: rescheduled or queued since
                self.add(key)
        return self._heap[0][0] - now if self._heap else None

    async def _timer(self) -> None:
        while True:
            wait = self._pop_due()
            self._timer_changed.clear()
            try:
                await asyncio.wait_for(self._timer_changed.wait(), wait)
            except TimeoutError:
                pass

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                # The thread sees kopf's context (its event poster, settings), as kopf's own sync handlers do.
                again = await loop.run_in_executor(self._pool, contextvars.copy_context().run, self._work, key)
            except Exception:  # noqa: BLE001 - one run's bug must not stop the others' reconciles
                log.exception("reconcile of %s failed; again in %.0fs", key, ERROR_RETRY_S)
                again = ERROR_RETRY_S
            finally:
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif again is not None:
                self.add_after(key, again)
