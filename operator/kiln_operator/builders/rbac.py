"""Per-run identity: the trainer pods may patch their run's progress ConfigMap and nothing else.

This is how progress reaches ``status.progress`` without the operator ever reading tenants' S3
credentials: the trainer writes it into ConfigMap ``<run>-progress`` through a Role scoped by
resourceNames to that one object, and the operator validates it and copies it into the status
(kiln_operator/progress.py). The trainer cannot touch the status itself (usage, cost, phase).
"""

from __future__ import annotations

from typing import Any

from kiln_api import contract as c

from kiln_operator.builders.common import Run, child_name, metadata, trainer_sa

STAGE = "trainer"


def build_service_account(run: Run) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(run, child_name(run, STAGE), STAGE),
        "automountServiceAccountToken": True,  # the trainer's progress sink needs the token
    }


def build_role(run: Run) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(run, child_name(run, STAGE), STAGE),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [c.progress_configmap(run.name)],
                "verbs": ["get", "patch"],
            }
        ],
    }


def build_role_binding(run: Run) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(run, child_name(run, STAGE), STAGE),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": child_name(run, STAGE)},
        "subjects": [{"kind": "ServiceAccount", "name": trainer_sa(run), "namespace": run.namespace}],
    }


def build_rbac(run: Run) -> list[dict[str, Any]]:
    """ServiceAccount (unless the run brings its own for workload identity), Role, RoleBinding."""
    objs = [build_role(run), build_role_binding(run)]
    if run.spec.storage.service_account_name is None:
        objs.insert(0, build_service_account(run))
    return objs
