"""A job's state from its Job and pods as the API gives them: tables and
decisions, without an engine."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pman.backends.kubernetes.state import (
    POD_PHASES,
    STUCK_REASONS,
    has_ended,
    index_of,
    job_info,
    job_state,
    mebibytes,
    newest_pods,
    pods_by_job,
    true_conditions,
    workers_of,
)
from pman.models import JobState
from tests.unit.backends.kubernetes.helpers import (
    NOW,
    condition,
    iso,
    job,
    pod,
    terminated,
)


def state_of(j: dict[str, Any], pods: list[dict[str, Any]], timeout: float = 60) -> Any:
    return job_state(j, pods, timeout, NOW)


def test_job_without_any_status_yet_is_queued_not_undefined() -> None:
    # upstream reported "undefined" here (FNNDSC/pman#225)
    out = state_of(job(), [])
    assert out.state is JobState.QUEUED
    assert "Job controller" in out.message


def test_complete_job_succeeds_even_without_counts() -> None:
    out = state_of(job({"conditions": [condition("Complete")]}), [])
    assert (out.state, out.exit_code) == (JobState.SUCCEEDED, 0)


def test_running_and_pending() -> None:
    running = pod("Running", state={"running": {"startedAt": iso(NOW)}})
    assert state_of(job({"active": 1}), [running]).state is JobState.RUNNING
    creating = pod("Pending", state={"waiting": {"reason": "ContainerCreating"}})
    out = state_of(job({"active": 1}), [creating])
    assert out.state is JobState.QUEUED and "ContainerCreating" in out.message


def test_failed_job_reports_the_exit_code() -> None:
    failed = job({"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    out = state_of(failed, [pod("Failed", state=terminated(3))])
    assert (out.state, out.exit_code, out.reason) == (JobState.FAILED, 3, "exit_code")
    assert out.message == "exited with code 3"


def test_oom_killed() -> None:
    failed = job({"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    out = state_of(failed, [pod("Failed", state=terminated(137, "OOMKilled"))])
    assert out.state is JobState.FAILED and out.reason == "oom_killed"
    assert "out of memory (memory_limit 64 MiB)" in out.message


def test_deadline_exceeded() -> None:
    failed = job({"conditions": [condition("Failed", "DeadlineExceeded", "Job was active longer")]})
    out = state_of(failed, [])
    assert out.state is JobState.FAILED and out.reason == "time_limit"
    assert "time limit of 30 minutes" in out.message


def test_evicted() -> None:
    failed = job({"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    evicted = pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    out = state_of(failed, [evicted])
    assert out.state is JobState.SYSTEM_ERROR and out.reason == "evicted"
    assert "low on resource: memory" in out.message


def test_the_worker_that_failed_is_named_before_those_stopped_for_it() -> None:
    failed = job(
        {"failed": 2, "conditions": [condition("Failed", "BackoffLimitExceeded")]}, workers=2
    )
    own = pod("Failed", 1, state=terminated(2))
    # worker 0 was killed when worker 1 failed: it ended later, with 137
    stopped = pod("Failed", 0, state=terminated(137))
    stopped["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = iso(NOW)
    out = state_of(failed, [stopped, own])
    assert out.message == "worker 1: exited with code 2"
    # a pod that never ran comes after those that did
    never = pod("Failed", 0, reason="", message="")
    never["status"]["containerStatuses"] = []
    assert state_of(failed, [never, own]).message == "worker 1: exited with code 2"


def test_failure_target_is_not_the_end_yet() -> None:
    # set while pods may still be terminating: the output is not final
    j = job({"active": 1, "conditions": [condition("FailureTarget", "BackoffLimitExceeded")]})
    running = pod("Running", state={"running": {"startedAt": iso(NOW)}})
    assert state_of(j, [running]).state is JobState.RUNNING


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"]
)
def test_stuck_pods_are_errors_after_the_grace_period_only(reason: str) -> None:
    waiting = {"waiting": {"reason": reason, "message": "no such image"}}
    young = pod("Pending", state=waiting, age=5)
    assert state_of(job({"active": 1}), [young], timeout=30).state is JobState.QUEUED
    old = pod("Pending", state=waiting, age=31)
    out = state_of(job({"active": 1}), [old], timeout=30)
    assert out.state is JobState.SYSTEM_ERROR
    assert reason in out.message and "no such image" in out.message


def test_unschedulable_pod_is_an_error_after_the_grace_period() -> None:
    unschedulable = pod("Pending", age=100)
    unschedulable["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        }
    ]
    unschedulable["status"]["containerStatuses"] = []
    out = state_of(job({"active": 1}), [unschedulable], timeout=60)
    assert out.state is JobState.SYSTEM_ERROR and out.reason == "not_scheduled"
    assert "Insufficient nvidia.com/gpu" in out.message


def test_job_info_reads_back_what_pman_wrote() -> None:
    done = job({"conditions": [condition("Complete")], "completionTime": iso(NOW), "succeeded": 1})
    info = job_info(done, [pod("Succeeded", state=terminated(0, "Completed"))], 60, NOW)
    assert info.state is JobState.SUCCEEDED
    assert info.image == "img:1"
    assert info.command == ["run", "$5"]
    assert info.fingerprint == "f"
    assert info.finished_at == NOW
    assert info.started_at == NOW - timedelta(seconds=4)
    assert info.labels["org.chrisproject.pman.image"] == "img:1"


# ------------------------------------------------------------------ tables


@pytest.mark.parametrize(
    ("phase", "state"),
    [
        ("Pending", JobState.QUEUED),
        ("Running", JobState.RUNNING),
        ("Succeeded", JobState.RUNNING),  # the Job's conditions say when it has ended
        ("Failed", JobState.RUNNING),
        ("Unknown", JobState.UNKNOWN),
        ("Whatever", JobState.UNKNOWN),
    ],
)
def test_one_pod_of_a_job_the_controller_has_not_ended(phase: str, state: JobState) -> None:
    assert state_of(job({"active": 1}), [pod(phase)]).state is state


def test_every_pod_phase_has_a_state() -> None:
    assert set(POD_PHASES) == {"Pending", "Running", "Succeeded", "Failed", "Unknown"}


@pytest.mark.parametrize(("reason", "cause"), sorted(STUCK_REASONS.items()))
def test_every_stuck_reason_is_a_system_error_once_overdue(reason: str, cause: str) -> None:
    old = pod("Pending", state={"waiting": {"reason": reason}}, age=61)
    out = state_of(job({"active": 1}), [old], timeout=60)
    assert (out.state, out.reason) == (JobState.SYSTEM_ERROR, cause)
    assert out.message == f"could not start within 60 s: {reason}"


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing"])
def test_waits_that_resolve_by_themselves_stay_queued(reason: str) -> None:
    old = pod("Pending", state={"waiting": {"reason": reason}}, age=600)
    out = state_of(job({"active": 1}), [old], timeout=60)
    assert (out.state, out.message) == (JobState.QUEUED, reason)


def test_workers_waiting_are_named() -> None:
    j = job({"active": 2}, workers=2)
    pods = [
        pod("Pending", 1, state={"waiting": {"reason": "ContainerCreating"}}),
        pod("Pending", 0, state={"waiting": {"reason": "ErrImagePull", "message": "nope"}}),
    ]
    out = state_of(j, pods)
    assert out.state is JobState.QUEUED
    assert out.message == "worker 0: ErrImagePull: nope; worker 1: ContainerCreating"
    assert state_of(job({"active": 1}), []).message == "waiting for its pods to start"


def test_several_workers_complete_together() -> None:
    out = state_of(job({"conditions": [condition("Complete")]}, workers=3), [])
    assert out.message == "all 3 workers exited with 0"


def test_a_suspended_job_without_live_pods_is_cancelled() -> None:
    suspended = job({"conditions": [condition("Suspended")]}, suspend=True)
    out = state_of(suspended, [pod("Failed", state=terminated(137))])
    assert (out.state, out.reason) == (JobState.CANCELLED, "suspended")
    # its pod is still being stopped: not yet
    running = pod("Running", state={"running": {"startedAt": iso(NOW)}})
    assert state_of(suspended, [running]).state is JobState.RUNNING


def test_a_failed_job_whose_pods_are_gone_says_why_the_controller_failed_it() -> None:
    failed = job({"conditions": [condition("Failed", "BackoffLimitExceeded", "too many")]})
    out = state_of(failed, [])
    assert (out.state, out.reason) == (JobState.FAILED, "job_failed")
    assert out.message == "BackoffLimitExceeded: too many"


def test_a_pod_that_failed_without_running_says_so() -> None:
    failed = job({"conditions": [condition("Failed", "BackoffLimitExceeded")]})
    never = pod("Failed", reason="UnexpectedAdmissionError", message="no device")
    never["status"]["containerStatuses"] = []
    out = state_of(failed, [never])
    assert (out.state, out.reason) == (JobState.FAILED, "pod_failed")
    assert out.message == "pod failed: no device"


@pytest.mark.parametrize(
    ("quantity", "mib"),
    [("128Mi", 128), ("1Gi", 1024), ("2048Ki", 2), ("1048576", 1), ("1G", 953), ("x", 0)],
)
def test_mebibytes(quantity: str, mib: int) -> None:
    assert mebibytes(quantity) == mib


def test_pods_by_index_and_owner() -> None:
    old, new = pod("Failed", 1, age=60), pod("Running", 1, age=5)
    first = pod("Running", 0)
    assert index_of(new) == 1
    assert (
        index_of({"metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": "x"}}})
        == 0
    )
    assert newest_pods([old, first, new]) == {0: first, 1: new}
    other: dict[str, Any] = {"metadata": {"ownerReferences": [{"kind": "Job", "uid": "u2"}]}}
    assert pods_by_job([old, other, new]) == {"u1": [old, new]}
    assert workers_of(job(workers=4)) == 4
    assert workers_of({}) == 1


def test_ended_only_by_the_final_conditions() -> None:
    assert has_ended(job({"conditions": [condition("Complete")]}))
    assert has_ended(job({"conditions": [condition("Failed")]}))
    assert not has_ended(job({"conditions": [condition("FailureTarget")]}))
    not_true = {**condition("Complete"), "status": "False"}
    assert not has_ended(job({"conditions": [not_true]}))
    assert set(true_conditions(job({"conditions": [not_true, condition("Suspended")]}))) == {
        "Suspended"
    }
