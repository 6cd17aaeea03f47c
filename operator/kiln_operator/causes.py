"""Why a run cannot go on, in words a person can act on: the trainer's own error from a failed pod, and
the runs a spec refers to. Each answer names the object (pod, run) and, where there is one, the field."""

from __future__ import annotations

from typing import Any

from kiln_api import trainingrun as tr
from kiln_api.contract import EXIT_BAD_CONFIG

from kiln_operator import children
from kiln_operator.builders.common import Run
from kiln_operator.kube import Kube
from kiln_operator.status import Transition


def job_pods(kube: Kube, run: Run, job: dict[str, Any]) -> list[dict[str, Any]]:
    return kube.list("v1", "Pod", run.namespace, f"job-name={job['metadata']['name']}")


def job_hold(kube: Kube, run: Run, job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Why the job's pods do not run: one cannot start or be placed (pod status), or one could not be
    created at all (the controller's Warning Event: Pod Security, quota, a webhook refused it)."""
    return children.blocked(pods) or children.refused(
        kube.warnings_about(run.namespace, str(job.get("kind", "Job")), job["metadata"]["name"]))


def failure_cause(kube: Kube, run: Run, pods: list[dict[str, Any]]) -> tuple[int, str] | None:
    """(exit code, "pod <name> exited with <code>: <the trainer's own error line>") of a failed pod: its
    termination message, else the tail of its log (the trainer prints config errors as its last line)."""
    found = children.failed_container(pods)
    if found is None:
        return None
    pod, code, message = found
    cause = children.cause_line(message) or children.cause_line(kube.pod_log_tail(run.namespace, pod, 20))
    return code, f"pod {pod} exited with {code}" + (f": {cause}" if cause else "")


def job_failed(kube: Kube, run: Run, job: dict[str, Any], reason: str, job_message: str) -> Transition:
    """A failed Job as a Failed transition carrying the trainer's error instead of Kubernetes' generic
    BackoffLimitExceeded; a config error (EXIT_BAD_CONFIG, which the Job's podFailurePolicy never
    retries) is reported as InvalidConfig."""
    cause = failure_cause(kube, run, job_pods(kube, run, job))
    if cause is None:
        return Transition("Failed", reason, job_message or f"{job['kind']} {job['metadata']['name']} failed")
    code, message = cause
    return Transition("Failed", "InvalidConfig" if code == EXIT_BAD_CONFIG else reason, message)


def missing_references(kube: Kube, run: Run) -> tuple[tuple[str, str] | None, Transition | None]:
    """(hold, failure) for the runs this one starts from (initFrom) or learns from (teacher), checked
    before any pod exists: a missing one holds the run (GitOps may apply it later), a failed one fails it."""
    refs = []
    if run.spec.model.init_from is not None:
        refs.append(("spec.model.initFrom.run", run.spec.model.init_from.run, "InitFrom"))
    if run.spec.training.distillation is not None:
        refs.append(("spec.training.distillation.teacherRun", run.spec.training.distillation.teacher_run, "Teacher"))
    for path, name, what in refs:
        other = kube.get(f"{tr.GROUP}/{tr.VERSION}", tr.KIND, run.namespace, name)
        where = f"{path}: TrainingRun {run.namespace}/{name}"
        if other is None:
            return (f"{what}NotFound", f"{where} not found; the run waits until it exists"), None
        if (other.get("status") or {}).get("phase") == "Failed":
            return None, Transition("Failed", f"{what}Failed", f"{where} failed: it has no weights to give")
    return None, None
