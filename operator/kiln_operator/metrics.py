"""Prometheus metrics of the operator (served on the metrics port set at startup)."""

from __future__ import annotations

import threading

from kiln_api.trainingrun import PHASES
from prometheus_client import Counter, Gauge, Histogram

RUNS_BY_PHASE = Gauge("kiln_trainingruns", "TrainingRuns seen by this operator, by phase", ["phase"])
RECONCILE_SECONDS = Histogram(
    "kiln_reconcile_duration_seconds", "Time of one reconcile step", ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_ERRORS = Counter("kiln_reconcile_errors_total", "Reconcile steps that raised", ["phase"])
RESTARTS = Counter("kiln_gang_restarts_total", "Whole-gang training restarts", ["reason"])
TRANSITIONS = Counter("kiln_phase_transitions_total", "Phase transitions", ["to", "reason"])
API_REQUESTS = Counter("kiln_api_requests_total", "Requests the reconciles sent to the API server (kopf's "
                       "watches not counted)", ["verb"])

_lock = threading.Lock()
_phase_of: dict[str, str] = {}  # run key → phase; only feeds the gauge, never read for decisions


def observe_phase(key: str, phase: str | None) -> None:
    """Record a run's phase (None forgets it) and refresh the gauge."""
    with _lock:
        if phase is None:
            _phase_of.pop(key, None)
        else:
            _phase_of[key] = phase
        counts = dict.fromkeys(PHASES, 0)
        for p in _phase_of.values():
            counts[p] = counts.get(p, 0) + 1
    for p, n in counts.items():
        RUNS_BY_PHASE.labels(phase=p).set(n)
