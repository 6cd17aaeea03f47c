"""Fault handling: non-finite losses, loss spikes, and SIGTERM (preemption)."""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from types import FrameType

log = logging.getLogger("kiln.train")


class TrainingFailed(RuntimeError):
    """Training cannot go on; the message says why."""


class NonFiniteGuard:
    """Counts skipped steps with a NaN/inf loss; fails the run after `limit` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def skipped(self, step: int, total: int) -> None:
        """Step `step` was skipped; `total` steps have been skipped in this run so far."""
        log.warning("step %d: non-finite loss, step skipped (%d so far)", step, total)
        if total > self.limit:
            raise TrainingFailed(f"{total} steps had a non-finite loss (faults.max_nonfinite_steps={self.limit})")


class SpikeDetector:
    """A loss above `factor` × the mean of the last `window` good losses is a spike.

    Rollbacks are bounded: after `max_rollbacks` the detector only reports (the caller warns).
    """

    def __init__(self, factor: float, window: int, max_rollbacks: int) -> None:
        self.factor, self.max_rollbacks = factor, max_rollbacks
        self.recent: deque[float] = deque(maxlen=window)
        self.rollbacks = 0

    def is_spike(self, loss: float) -> bool:
        if self.factor <= 0 or len(self.recent) < (self.recent.maxlen or 0):
            self.recent.append(loss)
            return False
        mean = sum(self.recent) / len(self.recent)
        if loss > self.factor * mean:
            return True
        self.recent.append(loss)
        return False

    def may_roll_back(self) -> bool:
        return self.rollbacks < self.max_rollbacks

    def rolled_back(self) -> None:
        self.rollbacks += 1
        self.recent.clear()  # the restored model starts a fresh running mean


class PreemptionFlag:
    """Set by SIGTERM; the loop checks it once per step (all ranks agree through an all-reduce)."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace = grace_seconds
        self.received_at: float | None = None
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received_at is None:
            self.received_at = time.monotonic()
            log.warning("SIGTERM: writing an emergency checkpoint (grace period %.0fs)", self.grace)

    @property
    def set(self) -> bool:
        return self.received_at is not None

    def seconds_left(self) -> float:
        return self.grace - (time.monotonic() - self.received_at) if self.received_at is not None else self.grace

    def close(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)
