"""The admin policy as the operator enforces it (the chart's admission policy: the integration test
tests/integration/test_security_admission_policy.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from kiln_operator import phases
from kiln_operator.builders.common import Run
from kiln_operator.policy import ENV_IMAGE_PREFIXES, ENV_SERVICE_ACCOUNTS, Policy

ENV = {ENV_IMAGE_PREFIXES: "registry.corp/kiln/, ghcr.io/kiln-dev/", ENV_SERVICE_ACCOUNTS: "team-a-s3"}


def _with(run: Run, image: str | None = None, account: str | None = None) -> Run:
    storage = dataclasses.replace(run.spec.storage, service_account_name=account)
    spec = dataclasses.replace(run.spec, image=image or run.spec.image, storage=storage)
    return dataclasses.replace(run, spec=spec)


def test_images_and_accounts_inside_the_policy_pass(tiny_run: Run) -> None:
    p = Policy.from_env(ENV)
    assert p.violation(_with(tiny_run, "registry.corp/kiln/trainer:1", "team-a-s3")) is None
    assert p.violation(_with(tiny_run, "ghcr.io/kiln-dev/kiln-trainer:0.1.0")) is None  # own identity
    assert Policy.from_env({}).violation(_with(tiny_run, "anything:1", "any-sa")) is None


@pytest.mark.parametrize(("image", "account", "field"), [
    ("docker.io/evil/miner:1", None, "spec.image"),
    ("registry.corp/kilnx/trainer:1", None, "spec.image"),  # a prefix is not a substring match
    ("registry.corp/kiln/trainer:1", "kube-admin", "spec.storage.serviceAccountName"),
])
def test_violations_name_the_field(tiny_run: Run, image: str, account: str | None, field: str) -> None:
    got = Policy.from_env(ENV).violation(_with(tiny_run, image, account))
    assert got is not None and got.startswith(field + ":")


def test_an_empty_list_allows_no_service_account(tiny_run: Run) -> None:
    p = Policy.from_env({ENV_SERVICE_ACCOUNTS: ""})
    assert p.violation(_with(tiny_run, account="team-a-s3")) is not None
    assert p.violation(tiny_run) is None


def test_the_operator_fails_a_run_that_slipped_past_admission(tiny_run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_IMAGE_PREFIXES, "registry.corp/")
    ctx = phases.Ctx(None, tiny_run, {"phase": "Pending"}, datetime(2026, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    t = phases.step_pending(ctx)  # no API call is made before the policy check
    assert t is not None and (t.to, t.reason) == ("Failed", "PolicyViolation") and "spec.image" in t.message
