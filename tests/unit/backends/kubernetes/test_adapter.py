"""The Kubernetes Backend without a cluster: names, the check before a job
is recorded, and its decisions over what the API client answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pman.backends.kubernetes import KubernetesBackend
from pman.errors import BackendUnavailable, InvalidJobSpec, JobExists, JobNotFound
from pman.models import JobState
from tests.unit.backends.kubernetes.helpers import (
    NOW,
    backend,
    condition,
    iso,
    job,
    site,
    spec,
)


def test_jid_must_be_a_dns_label(tmp_path: Path) -> None:
    b = backend(tmp_path)
    b.check_name("chris-jid-12")
    for bad in ("Chris", "a_b", "a.b", "-a", "a-", "x" * 64):
        with pytest.raises(InvalidJobSpec, match="DNS-1123 label") as e:
            b.check_name(bad)
        assert "jid" in e.value.fields


def test_unreachable_api_is_unavailable(tmp_path: Path) -> None:
    b = backend(tmp_path, PMAN_ENGINE_TIMEOUT="2")
    b.client.configuration.retries = 0
    with pytest.raises(BackendUnavailable, match=r"unreachable|did not answer"):
        b.ping()


class FakeKube:
    """The API client's answers, from a dict of Jobs; records its calls."""

    def __init__(self, *jobs: dict[str, Any]) -> None:
        self.jobs = {j["metadata"]["name"]: j for j in jobs}
        self.calls: list[tuple[str, str]] = []

    def create_job(self, body: dict[str, Any]) -> dict[str, Any] | None:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.jobs:
            return None
        meta = {**body["metadata"], "uid": "u9", "creationTimestamp": iso(NOW)}
        self.jobs[name] = {**body, "metadata": meta}
        return self.jobs[name]

    def owned_job(self, name: str) -> dict[str, Any] | None:
        self.calls.append(("read", name))
        return self.jobs.get(name)

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def suspend_job(self, name: str) -> None:
        self.calls.append(("suspend", name))

    def delete_job(self, name: str, uid: str) -> None:
        self.calls.append(("delete", f"{name}/{uid}"))


def with_fake(tmp_path: Path, *jobs: dict[str, Any]) -> tuple[KubernetesBackend, FakeKube]:
    b = backend(tmp_path)
    fake = FakeKube(*jobs)
    b.kube = fake
    return b, fake


def test_check_refuses_an_env_name_before_any_engine_call(tmp_path: Path) -> None:
    b, fake = with_fake(tmp_path)
    s = site(tmp_path)
    # several workers and GPUs are Kubernetes' to give: no refusal
    b.check(spec(s, number_of_workers=4, gpu_limit=2))
    bad = spec(s, env=["1BAD=x"])
    with pytest.raises(InvalidJobSpec, match="environment variable") as e:
        b.check(bad)
    assert "env" in e.value.fields
    # submit checks as well
    with pytest.raises(InvalidJobSpec, match="environment variable"):
        b.submit(bad)
    assert fake.calls == []


def test_submit_creates_the_job_or_names_the_one_there(tmp_path: Path) -> None:
    b, _ = with_fake(tmp_path)
    s = site(tmp_path)
    info = b.submit(spec(s))
    assert (info.name, info.state, info.native_id) == ("job-1", JobState.QUEUED, "u9")
    assert info.created_at == NOW and info.message == "submitted to Kubernetes"
    with pytest.raises(JobExists, match="exists already in namespace 'default'") as e:
        b.submit(spec(s))
    assert e.value.existing is not None and e.value.existing.name == "job-1"


def test_jobs_pman_did_not_make_are_not_found(tmp_path: Path) -> None:
    b, fake = with_fake(tmp_path)
    with pytest.raises(JobNotFound, match="no job named 'job-1' in Kubernetes namespace"):
        b.get("job-1")
    with pytest.raises(JobNotFound):
        b.cancel("job-1")
    b.delete("job-1")  # deleting twice is no error
    assert ("delete", "job-1/u1") not in fake.calls


def test_cancel_suspends_a_job_that_has_not_ended(tmp_path: Path) -> None:
    b, fake = with_fake(tmp_path, job({"active": 1}))
    b.cancel("job-1")
    assert ("suspend", "job-1") in fake.calls
    b, fake = with_fake(tmp_path, job({"conditions": [condition("Complete")]}))
    b.cancel("job-1")
    assert ("suspend", "job-1") not in fake.calls
    b.delete("job-1")
    assert fake.calls[-1] == ("delete", "job-1/u1")
    assert b.logs("job-1", 0) == ""
    assert list(b.iter_logs("job-1", tail=0)) == []
