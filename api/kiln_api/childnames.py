"""How long a TrainingRun's name may be: the longest name the operator (and Kubernetes, for it) derives from it.

Every child is named ``<run>-<stage>``; some children name their own children in turn (a PyTorchJob's
replica pods and Services ``<job>-worker-<i>``, an Indexed Job's pod hostnames ``<job>-<index>``, the
serving gate Job ``<run>-gate-v<version>``). Each of those must be a DNS-1035 label (at most 63
characters, starting with a letter, no dots): a run whose name leaves no room for them is accepted by
a plain CRD and then sits in a phase forever. So the CRD refuses it at admission with a rule derived
here, and ``tests/unit/operator/test_child_names.py`` builds every child with the real builders for a
run of exactly the longest name and checks that it is tight (every name fits, one is exactly 63).
"""

from __future__ import annotations

import dataclasses
import re

from kiln_api import trainingrun as tr
from kiln_api.specfields import SpecError, constraints

DNS_LABEL_MAX = 63
"""Names that become Services, hostnames or label values are DNS-1035/RFC 1123 labels."""

RUN_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""DNS-1035 label: the run's name is the prefix of Service names (no dots, starting with a letter)."""

STAGES = ("prepare", "train", "export", "config", "trainer")
"""The ``<stage>`` of every ``<run>-<stage>`` child (Jobs, ConfigMap, ServiceAccount/Role/RoleBinding)."""

TRAIN_STAGE = "train"
"""The training gang's stage: its launcher names one object per node after it."""

MAX_SERVED_VERSION = 99_999
"""Largest model version the gate Job's name ``<run>-gate-v<version>`` is sized for."""


def _max_nodes() -> int:
    nodes = next(f for f in dataclasses.fields(tr.TrainingSpec) if f.name == "nodes")
    bound = constraints(nodes).maximum
    assert bound is not None  # the CRD bounds nodes; without it no name length would be safe
    return int(bound)


def derived_suffixes() -> tuple[str, ...]:
    """Every suffix appended to a run's name for an object whose name must be a DNS label."""
    last = _max_nodes() - 1
    train = f"-{TRAIN_STAGE}"
    return (
        *(f"-{s}" for s in STAGES),
        f"{train}-master-0", f"{train}-worker-{last - 1}",  # PyTorchJob: Master + (nodes - 1) Workers
        f"{train}-{last}",  # Indexed Job: pod hostname <job>-<completion index>
        f"-gate-v{MAX_SERVED_VERSION}",
    )


def max_run_name_length() -> int:
    """The longest run name whose every derived name still fits a DNS label."""
    return DNS_LABEL_MAX - max(len(s) for s in derived_suffixes())


def name_rule() -> dict[str, str]:
    """The CRD's root CEL rule over ``metadata.name`` (the API server only checks it is a DNS subdomain)."""
    limit = max_run_name_length()
    return {
        "rule": f"size(self.metadata.name) <= {limit} && self.metadata.name.matches('{RUN_NAME_PATTERN}')",
        "message": f"metadata.name: must be a DNS-1035 label (lowercase letters, digits, '-', starting with a "
                   f"letter) of at most {limit} characters, so that every child name (longest: "
                   f"<name>{max(derived_suffixes(), key=len)}) fits in {DNS_LABEL_MAX}",
    }


def check_run_name(name: str) -> None:
    """The same rule in Python, for runs created before the CRD carried it; raises SpecError."""
    limit = max_run_name_length()
    if len(name) > limit or not re.match(RUN_NAME_PATTERN, name):
        raise SpecError("metadata.name", f"{name!r} cannot carry its children: must be a DNS-1035 label of at "
                                         f"most {limit} characters (longest child: "
                                         f"{name}{max(derived_suffixes(), key=len)})")
