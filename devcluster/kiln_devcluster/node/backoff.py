"""Crash-loop back-off of restarted containers (the kubelet's 10s doubling up to 5 minutes)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential back-off for one container; call :meth:`next_delay` each time it exits."""

    initial: float = 10.0
    """Delay before the first restart, in seconds."""
    maximum: float = 300.0
    """Upper bound of the delay, in seconds."""
    reset_after: float = 600.0
    """A container that ran at least this long (seconds) starts again from ``initial``."""
    _current: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ValueError(f"backoff.initial must be >= 0, got {self.initial}")
        if self.maximum < self.initial:
            raise ValueError(f"backoff.maximum ({self.maximum}) must be >= backoff.initial ({self.initial})")
        if self.reset_after <= 0:
            raise ValueError(f"backoff.reset_after must be > 0, got {self.reset_after}")

    def next_delay(self, ran_for: float) -> float:
        """Delay before restarting a container that just exited after running ``ran_for`` seconds."""
        if ran_for >= self.reset_after or self._current == 0.0:
            self._current = self.initial
        else:
            self._current = min(self._current * 2, self.maximum)
        return self._current
