"""Drives the phase machine from watch events instead of a timer per run.

The watch handlers (handlers.py) hand every event here: a run's own events keep the latest body in
``runs`` and queue the run when something a reconcile depends on changed (triggers.run_fingerprint);
a child's events queue the run it belongs to. A worker then calls the phase machine (``step``, i.e.
handlers.reconcile) on the latest body, writes the status patch it produced, and schedules the run's
next look by the time it is due (triggers.due_in) — a budget that will run out, a held run, a rollout,
else a slow resync. Runs at rest cost no API request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kiln_api import trainingrun as tr

from kiln_operator import triggers
from kiln_operator.triggers import RunKey
from kiln_operator.workqueue import WorkQueue

log = logging.getLogger("kiln.driver")

TEMPORARY_RETRY_S = 10.0
"""A TemporaryError without its own delay (an API error) is retried after this long."""

Step = Callable[[dict[str, Any], kopf.Patch], None]
"""One reconcile of a run's body into a patch (its ``status`` part is written)."""


WriteStatus = Callable[[str, str, dict[str, Any]], dict[str, Any]]
"""Merge-patch a run's status (namespace, name, status); returns the run as written."""


def _newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether body ``a`` is at least as recent as ``b`` (resourceVersions are etcd revisions; compare
    them as numbers where they are, else trust arrival order)."""
    va, vb = (str((x.get("metadata") or {}).get("resourceVersion") or "") for x in (a, b))
    if va.isdigit() and vb.isdigit():
        return int(va) >= int(vb)
    return True


def _changes(status: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    return any(status.get(k) != v for k, v in patch.items())


def _devices(spec: Mapping[str, Any]) -> int:
    try:
        return tr.parse_spec(dict(spec)).training.devices()
    except Exception:  # noqa: BLE001 - a spec that does not parse has failed the run already
        return 0


class Driver:
    """The runs the operator knows of, and the queue that reconciles them."""

    def __init__(self, step: Step, write_status: WriteStatus, workers: int) -> None:
        self.step, self.write_status = step, write_status
        self.runs: dict[RunKey, dict[str, Any]] = {}
        self.queue: WorkQueue[RunKey] = WorkQueue(self.reconcile, workers)

    def remember(self, body: dict[str, Any]) -> RunKey:
        meta = body["metadata"]
        key: RunKey = (str(meta["namespace"]), str(meta["name"]))
        known = self.runs.get(key)
        if known is None or _newer(body, known):
            self.runs[key] = body
        return key

    def run_event(self, kind: str | None, body: dict[str, Any]) -> None:
        """A TrainingRun was listed (kind None), added, modified or deleted."""
        meta = body["metadata"]
        key: RunKey = (str(meta["namespace"]), str(meta["name"]))
        if kind == "DELETED":
            self.runs.pop(key, None)
            self.queue.forget(key)
            return
        known = self.runs.get(key)
        self.remember(body)
        if known is None or triggers.run_fingerprint(known) != triggers.run_fingerprint(body):
            self.queue.add(key)

    def child_event(self, body: Mapping[str, Any]) -> list[RunKey]:
        """A child (or a serving object) changed: queue the runs it concerns; returns them."""
        owner = triggers.run_of_child(body)
        keys = [owner] if owner is not None else triggers.runs_serving(body, list(self.runs.values()))
        for key in keys:
            if key in self.runs:  # a child of a run this operator does not watch (another namespace) is not ours
                self.queue.add(key)
        return [k for k in keys if k in self.runs]

    def reconcile(self, key: RunKey) -> float | None:
        """One reconcile of the latest body (in a worker thread); seconds until it is due again."""
        body = self.runs.get(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone or going: the owner references take the children away
        patch = kopf.Patch()
        retry: float | None = None
        try:
            self.step(body, patch)
        except kopf.TemporaryError as e:
            retry = e.delay if e.delay is not None else TEMPORARY_RETRY_S
            log.warning("%s/%s: %s; again in %.0fs", *key, e, retry)
        except kopf.PermanentError as e:  # the status patch says Failed and why
            log.warning("%s/%s: %s", *key, e)
        status = dict(body.get("status") or {})
        update = dict(patch.get("status") or {})
        if update and _changes(status, update):
            written = self.write_status(key[0], key[1], update)
            self.remember(written)
        status.update(update)
        due = triggers.due_in(body.get("spec") or {}, status, _devices(body.get("spec") or {}))
        return retry if retry is not None else due
