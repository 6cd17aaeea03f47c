"""The work queue: one entry per key, one reconcile per key at a time, due times by a clock."""

from __future__ import annotations

import asyncio
import threading

from kiln_operator.workqueue import WorkQueue

DEADLINE_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_due_times_fire_in_order_and_an_earlier_trigger_wins() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(lambda key: None, workers=1, clock=clock)
    q.add_after("late", 300)
    q.add_after("soon", 5)
    q.add_after("soon", 60)  # a later due time never postpones an earlier one
    assert q.due("soon") == 5
    assert q._pop_due() == 5 and not q.queued("soon")
    clock.t += 5
    assert q._pop_due() == 295
    assert q.queued("soon") and not q.queued("late")
    q.add("late")  # an event makes it due now: its timer entry is dropped
    assert q.due("late") is None and q.queued("late")
    clock.t += 300
    assert q._pop_due() is None


def test_events_for_a_key_collapse_and_a_key_never_runs_twice_at_once() -> None:
    calls: list[str] = []
    release = threading.Event()
    running = threading.Event()

    def work(key: str) -> float | None:
        calls.append(key)
        running.set()
        release.wait(DEADLINE_S)
        return None

    async def scenario() -> None:
        q: WorkQueue[str] = WorkQueue(work, workers=4)
        for _ in range(3):
            q.add("run")  # three events before a worker is free: one reconcile
        q.start()
        await asyncio.wait_for(asyncio.to_thread(running.wait, DEADLINE_S), DEADLINE_S)
        q.add("run")  # changed while being reconciled: once more, after, never alongside
        q.add("run")
        assert calls == ["run"]
        release.set()

        async def twice() -> None:
            while len(calls) < 2 or q.pending():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(twice(), DEADLINE_S)
        await q.stop()

    asyncio.run(scenario())
    assert calls == ["run", "run"]


def test_a_failing_reconcile_is_tried_again_later() -> None:
    def work(key: str) -> float | None:
        raise RuntimeError("bug")

    async def scenario() -> float | None:
        q: WorkQueue[str] = WorkQueue(work, workers=1)
        q.start()
        q.add("run")

        async def scheduled() -> None:
            while q.due("run") is None:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(scheduled(), DEADLINE_S)
        due = q.due("run")
        await q.stop()
        return due

    due = asyncio.run(scenario())
    assert due is not None and 25 < due <= 30
