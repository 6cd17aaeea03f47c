"""Leader election on a Lease, against an in-memory API with resourceVersion conflicts and a fake clock."""

from __future__ import annotations

import copy

import pytest
from kiln_operator.leader import LeaseConfig, LeaseElector, config_from_env
from kubernetes.client.rest import ApiException


class FakeLeases:
    """read/create/replace of one Lease with optimistic concurrency, as the API server does it."""

    def __init__(self) -> None:
        self.lease = None
        self.version = 0

    def read_namespaced_lease(self, name, namespace):  # noqa: ANN001, ANN201
        if self.lease is None:
            raise ApiException(status=404, reason="NotFound")
        return copy.deepcopy(self.lease)

    def _store(self, body):  # noqa: ANN001, ANN201
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)

    def create_namespaced_lease(self, namespace, body):  # noqa: ANN001, ANN201
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name, namespace, body):  # noqa: ANN001, ANN201
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _pair() -> tuple[FakeLeases, Clock, LeaseElector, LeaseElector]:
    api, clock = FakeLeases(), Clock()
    a = LeaseElector(api, LeaseConfig("kiln-operator", "kiln-system", "a"), clock)  # type: ignore[arg-type]
    b = LeaseElector(api, LeaseConfig("kiln-operator", "kiln-system", "b"), clock)  # type: ignore[arg-type]
    return api, clock, a, b


def test_only_one_candidate_leads_and_the_leader_keeps_renewing() -> None:
    api, clock, a, b = _pair()
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    for _ in range(10):  # 50 s of renewals every 5 s: b never takes over a live leader
        clock.t += 5
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert api.lease.spec.holder_identity == "a" and api.lease.spec.lease_transitions == 0


def test_standby_takes_over_only_after_the_record_stood_still_for_the_lease_duration() -> None:
    api, clock, a, b = _pair()
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees the record now
    clock.t += 14  # a died right after its renewal: 14 s of silence is not yet 15
    assert not b.try_acquire_or_renew()
    clock.t += 1
    assert b.try_acquire_or_renew()
    assert api.lease.spec.holder_identity == "b" and api.lease.spec.lease_transitions == 1
    assert not a.try_acquire_or_renew()  # the old leader, back, sees b's fresh record and stands by


def test_release_lets_the_standby_take_over_at_once() -> None:
    api, clock, a, b = _pair()
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    a.release()
    assert api.lease.spec.holder_identity is None
    assert b.try_acquire_or_renew()


def test_a_candidate_that_loses_the_write_race_stands_by() -> None:
    api, clock, a, b = _pair()
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    clock.t += 20  # a went silent: b may take over

    class Racing(FakeLeases):
        def read_namespaced_lease(self, name, namespace):  # noqa: ANN001, ANN201
            seen = super().read_namespaced_lease(name, namespace)
            # A third candidate writes between b's read and b's write.
            third = copy.deepcopy(self.lease)
            third.spec.holder_identity = "c"
            self._store(third)
            return seen

    racing = Racing()
    racing.lease, racing.version = api.lease, api.version
    b.api = racing
    assert not b.try_acquire_or_renew()  # 409 on its stale resourceVersion: no error, no leadership
    assert racing.lease.spec.holder_identity == "c"


def test_renew_forever_reports_loss_when_another_replica_holds_it() -> None:
    api, clock, a, b = _pair()
    a.cfg = LeaseConfig("kiln-operator", "kiln-system", "a", lease_s=3, renew_s=0.02, retry_s=0.01)
    assert a.try_acquire_or_renew()
    lease = api.lease
    lease.spec.holder_identity = "b"  # someone else wrote the record (e.g. after a long pause of a)
    api._store(lease)
    lost: list[bool] = []
    a.renew_forever(lambda: lost.append(True))
    assert lost == [True]


def test_config_from_env_names_the_missing_namespace() -> None:
    assert config_from_env({}) is None
    with pytest.raises(ValueError, match="POD_NAMESPACE"):
        config_from_env({"KILN_LEADER_ELECTION": "true"})
    cfg = config_from_env({"KILN_LEADER_ELECTION": "true", "POD_NAMESPACE": "kiln-system", "POD_NAME": "op-1"})
    assert cfg is not None and (cfg.identity, cfg.lease_s, cfg.renew_s, cfg.retry_s) == ("op-1", 15, 5.0, 1.875)
