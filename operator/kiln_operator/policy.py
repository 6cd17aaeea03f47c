"""The admin policy on what a TrainingRun may use: image prefixes and ServiceAccounts.

The chart's ValidatingAdmissionPolicy refuses violating runs at admission
(charts/kiln/templates/admission-policy.yaml); the operator checks the same values again before it
creates anything, so a run admitted before the policy existed (or while it was off) fails with
PolicyViolation instead of running. The chart passes the values in the environment:
comma-separated lists where ``*`` allows anything and an empty list allows nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kiln_operator.builders.common import Run

ENV_IMAGE_PREFIXES = "KILN_ALLOWED_IMAGE_PREFIXES"
ENV_SERVICE_ACCOUNTS = "KILN_ALLOWED_SERVICE_ACCOUNTS"
ANY = "*"


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@dataclass(frozen=True)
class Policy:
    image_prefixes: tuple[str, ...] = (ANY,)
    """A run's spec.image must start with one of these."""
    service_accounts: tuple[str, ...] = (ANY,)
    """spec.storage.serviceAccountName, when set, must be one of these (a run without one uses its own
    per-run trainer identity, which is always allowed)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Policy:
        """Unset variables allow anything (an operator run outside the chart); set ones are exact."""
        e = os.environ if env is None else env
        images = _list(e[ENV_IMAGE_PREFIXES]) if ENV_IMAGE_PREFIXES in e else (ANY,)
        accounts = _list(e[ENV_SERVICE_ACCOUNTS]) if ENV_SERVICE_ACCOUNTS in e else (ANY,)
        return cls(images, accounts)

    def violation(self, run: Run) -> str | None:
        """What in ``run`` the policy forbids, naming the field; None when it complies."""
        image = run.spec.image
        if not any(p == ANY or image.startswith(p) for p in self.image_prefixes):
            return (f"spec.image: {image!r} is not under an allowed image prefix "
                    f"({', '.join(self.image_prefixes) or 'none allowed'})")
        account = run.spec.storage.service_account_name
        if account is not None and not any(a in (ANY, account) for a in self.service_accounts):
            return (f"spec.storage.serviceAccountName: {account!r} is not an allowed ServiceAccount "
                    f"({', '.join(self.service_accounts) or 'none allowed'})")
        return None
