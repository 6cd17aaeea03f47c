"""What both training launchers (PyTorchJob, Indexed Job) put in every training pod.

Each pod runs the contract's one command; with ``processesPerNode`` > 1 the trainer starts torchrun
inside the pod from the gang variables below (``kiln_api.contract``, ``kiln_trainer.train.launch``).
"""

from __future__ import annotations

from typing import Any

from kiln_api import contract as c
from kiln_api.contract import METRICS_PORT as METRICS_PORT  # configmap.py's import; the contract owns it

from kiln_operator.builders.common import Run, env_values, trainer_container

STAGE = "train"
GRACE_SECONDS = c.TERMINATION_GRACE_SECONDS


def nproc_per_node(run: Run) -> int:
    """Processes (ranks) per pod."""
    return run.spec.training.procs_per_node()


def gang_env(run: Run) -> list[dict[str, Any]]:
    """The gang's shape; a PyTorchJob controller injects the same values, the Indexed Job has only these."""
    t = run.spec.training
    return env_values({c.ENV_NNODES: str(t.nodes), c.ENV_NPROC_PER_NODE: str(nproc_per_node(run))})


def ports() -> list[dict[str, Any]]:
    return [{"name": c.RENDEZVOUS_PORT_NAME, "containerPort": c.RENDEZVOUS_PORT, "protocol": "TCP"},
            {"name": c.METRICS_PORT_NAME, "containerPort": c.METRICS_PORT, "protocol": "TCP"}]


def training_container(run: Run, name: str, extra_env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The training container: gang env, GPUs, shared memory, rendezvous and metrics ports."""
    return trainer_container(run, STAGE, name=name, extra_env=gang_env(run) + (extra_env or []),
                             gpus=True, shm=True, ports=ports())
