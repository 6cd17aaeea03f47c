"""The pod contract: every name, port, path and exit code the operator's pods and the trainer share.

The operator writes pods from these constants and the trainer reads its environment through them,
so a renamed variable breaks both sides at once (``tests/unit/contract`` feeds the operator's pod
environment to the trainer's reader). Kubeflow keeps its torchrun variables the same way
(``TorchEnvNumProcPerNode = "PET_NPROC_PER_NODE"``). Pure data and string building: no torch, no kopf.

Pods run with ``readOnlyRootFilesystem: true`` as a non-root user. Everything a step writes goes
below :data:`WORK_DIR`, an emptyDir the pod mounts; the ``*_DIR`` constants and
:func:`writable_env` (HOME, TMPDIR and the caches of the libraries the trainer loads) point there.
"""

from __future__ import annotations

from dataclasses import dataclass

# ------------------------------------------------------------------ mounts and writable paths

CONFIG_VOLUME = "config"
CONFIG_DIR = "/etc/kiln"
"""The run's ConfigMap (prepare.yaml, train.yaml, export.yaml), mounted read-only."""

WORK_VOLUME = "work"
WORK_DIR = "/scratch"
"""The pod's one writable folder (an emptyDir); nothing else in a trainer pod is written.

A folder of its own rather than /tmp, so no program's habit of writing /tmp decides where data lands."""
CHECKPOINT_DIR = f"{WORK_DIR}/checkpoints"
"""Local staging of checkpoints before upload (TrainConfig.checkpoint.local_dir in pods)."""
CACHE_DIR = f"{WORK_DIR}/cache"
"""Downloaded datasets and library caches (compiled kernels, fonts)."""

SHM_VOLUME = "shm"
SHM_DIR = "/dev/shm"
"""Memory-backed emptyDir: NCCL and gloo exchange through shared memory between ranks of one pod."""


def config_path(step: str) -> str:
    """The config file ``kiln-trainer <step>`` reads."""
    return f"{CONFIG_DIR}/{step}.yaml"


def writable_env() -> dict[str, str]:
    """Variables that send every writer we know of (Python, torch, DeepSpeed, Triton kernels,
    matplotlib, our dataset cache) below WORK_DIR instead of the read-only image."""
    return {
        "HOME": WORK_DIR,
        "TMPDIR": WORK_DIR,  # must exist when a program starts: the mount itself does
        ENV_CACHE: CACHE_DIR,
        "XDG_CACHE_HOME": CACHE_DIR,
        "TORCH_EXTENSIONS_DIR": f"{CACHE_DIR}/torch_extensions",
        "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
        "MPLCONFIGDIR": f"{CACHE_DIR}/matplotlib",
    }


# ------------------------------------------------------------------ environment variable names

# Run identity and storage: the trainer reads these (status sink, logs); boto reads the AWS_* ones.
ENV_RUN_NAME = "KILN_RUN_NAME"
ENV_RUN_NAMESPACE = "KILN_RUN_NAMESPACE"
ENV_STORAGE_URI = "KILN_STORAGE_URI"
ENV_CACHE = "KILN_CACHE"
ENV_AWS_REGION = "AWS_DEFAULT_REGION"
ENV_AWS_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_AWS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
CREDENTIAL_KEYS = (ENV_AWS_KEY_ID, ENV_AWS_SECRET_KEY)
"""Keys of the Secret a run's storage.secretRef names; each becomes the variable of the same name."""

# Rendezvous of the pod gang. A PyTorchJob's controller injects all of them (RANK is the pod's index
# there, WORLD_SIZE counts processes); the Indexed Job builder sets the same values itself.
ENV_MASTER_ADDR = "MASTER_ADDR"
ENV_MASTER_PORT = "MASTER_PORT"
ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_RANK = "RANK"
ENV_NNODES = "PET_NNODES"
ENV_NPROC_PER_NODE = "PET_NPROC_PER_NODE"
ENV_NODE_RANK = "PET_NODE_RANK"
# Set by torchrun for each process it starts (never by the operator): its presence means "I am a rank".
ENV_LOCAL_RANK = "LOCAL_RANK"
# Read by the Indexed Job's pods through the downward API: the completion index is the node rank.
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"

# ------------------------------------------------------------------ ports and names

RENDEZVOUS_PORT = 23456
"""torchrun's static rendezvous (and the process group's TCP store) on node rank 0; the PyTorchJob default."""
RENDEZVOUS_PORT_NAME = "pytorchjob-port"
"""Kubeflow finds the port by this name on the container named :data:`PYTORCHJOB_CONTAINER`."""
PYTORCHJOB_CONTAINER = "pytorch"
"""Kubeflow injects the rendezvous environment only into a container with this name."""
TRAINER_CONTAINER = "trainer"
"""The container name of every other trainer pod (prepare, export, Indexed Job training)."""
METRICS_PORT = 9464
"""Rank 0 serves kiln_train_* gauges here (TrainConfig.monitor.prometheus_port); the chart scrapes it."""
METRICS_PORT_NAME = "metrics"
TERMINATION_GRACE_SECONDS = 120
"""SIGTERM → SIGKILL window of a training pod: the ranks commit an emergency checkpoint in it."""

# Trainer progress goes into a per-run ConfigMap (the only object the trainer's identity may write);
# the operator validates it and copies it into status.progress, so no trainer can touch the status.
PROGRESS_DATA_KEY = "progress.json"


def progress_configmap(run_name: str) -> str:
    """Name of the run's progress ConfigMap (the trainer knows its run from ENV_RUN_NAME)."""
    return f"{run_name}-progress"


# Triton's repository API (load/unload) is restricted to holders of a per-target key: the serving
# pod gets it from the Secret the operator creates (ENV_TRITON_REPOSITORY_KEY) and starts Triton with
# the restricted-API flags; the operator sends it in this header. Inference needs no key.
ENV_TRITON_REPOSITORY_KEY = "KILN_TRITON_REPOSITORY_KEY"
TRITON_KEY_HEADER = "kiln-repository-key"
TRITON_KEY_SECRET_FIELD = "key"


def triton_restricted_args(key: str) -> list[str]:
    """tritonserver flags that refuse the model-repository API (HTTP and gRPC) without ``key``."""
    rule = f"model-repository:{TRITON_KEY_HEADER}={key}"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]

# ------------------------------------------------------------------ exit codes

EXIT_OK = 0
EXIT_FAILED = 1
"""Anything else that went wrong: the operator may restart the gang (within spec.training.maxRestarts)."""
EXIT_BAD_CONFIG = 78
"""The config or the world it meets is wrong (sysexits' EX_CONFIG). A restart cannot fix it, so
nothing retries it: step Jobs fail at once (podFailurePolicy FailJob), training gangs are not restarted."""
EXIT_QUANTIZATION_REJECTED = 79
"""Export only: the INT8 variant's perplexity is over the run's bound, so nothing was published. The
same checkpoint would be rejected again: never retried; the run fails with QuantizationRejected."""
EXIT_PREEMPTED = 143
"""128 + SIGTERM: stopped from outside after an emergency checkpoint; the gang resumes from it."""
PERMANENT_EXIT_CODES = (EXIT_BAD_CONFIG, EXIT_QUANTIZATION_REJECTED)
TERMINATION_LOG = "/dev/termination-log"
"""The container's terminationMessagePath (Kubernetes' default): a step writes why it failed there."""


def is_permanent_exit(code: int) -> bool:
    """Whether a container that exited with ``code`` must not be retried."""
    return code in PERMANENT_EXIT_CODES


# ------------------------------------------------------------------ launch

TRAINER_EXECUTABLE = "kiln-trainer"
TRAINER_MODULE = "kiln_trainer.cli"
"""What torchrun starts in each rank (``python -m kiln_trainer.cli train --config ...``)."""


def step_command(step: str) -> list[str]:
    """The container command of every trainer pod: ``kiln-trainer <step> --config /etc/kiln/<step>.yaml``.

    A training pod runs the same command whatever its process count: ``kiln-trainer train`` checks the
    config first (so a bad one exits with :data:`EXIT_BAD_CONFIG`, which torchrun would turn into 1),
    then starts :func:`torchrun_args` itself when the pod asks for more than one process.
    """
    return [TRAINER_EXECUTABLE, step, "--config", config_path(step)]


@dataclass(frozen=True)
class Gang:
    """Where one pod sits in its gang: what torchrun inside the pod needs."""

    nnodes: int
    """Pods in the gang."""
    nproc_per_node: int
    """Ranks per pod."""
    node_rank: int
    """This pod's index, 0 for the pod that hosts the rendezvous."""
    master_addr: str
    """DNS name of node rank 0."""
    master_port: int
    """The rendezvous port on node rank 0."""

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def torchrun_args(gang: Gang, config: str, step: str = "train") -> list[str]:
    """Arguments after ``python -m torch.distributed.run``: one process per rank, static rendezvous.

    Restarts stay the operator's (whole gang from the last commit), so torchrun never restarts a rank.
    """
    return [
        f"--nnodes={gang.nnodes}",
        f"--nproc-per-node={gang.nproc_per_node}",
        f"--node-rank={gang.node_rank}",
        f"--master-addr={gang.master_addr}",
        f"--master-port={gang.master_port}",
        "--max-restarts=0",
        "-m", TRAINER_MODULE, step, "--config", config,
    ]
