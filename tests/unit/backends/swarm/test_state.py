"""The swarm backend's state without an engine: the task state table, a job's
state over its tasks, a service as a JobInfo (moved from tests/unit/test_swarm.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pman.backends.swarm.state import (
    CHANGED_EVENTS,
    TASK_STATES,
    job_info,
    job_of_event,
    job_state,
    killed_containers,
    oom_killed,
)
from pman.models import JobState

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


_MIB = 1024 * 1024


def task(state: str, slot: int = 1, age: float = 1.0, **status: Any) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
    return {
        "ID": f"t{slot}",
        "Slot": slot,
        "CreatedAt": created,
        "Status": {"State": state, "Timestamp": created, **status},
    }


def test_task_state_table() -> None:
    documented = {
        "new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
        "starting", "running", "complete", "failed", "shutdown", "rejected", "orphaned",
        "remove",
    }  # fmt: skip
    assert set(TASK_STATES) == documented
    assert TASK_STATES["complete"] is JobState.SUCCEEDED
    assert TASK_STATES["failed"] is JobState.FAILED
    assert TASK_STATES["rejected"] is JobState.SYSTEM_ERROR
    assert TASK_STATES["running"] is JobState.RUNNING
    assert TASK_STATES["pending"] is JobState.QUEUED


@pytest.mark.parametrize(
    ("tasks", "workers", "state", "reason"),
    [
        ([], 1, JobState.QUEUED, ""),
        ([task("pending")], 1, JobState.QUEUED, ""),
        ([task("running")], 1, JobState.RUNNING, ""),
        ([task("complete", ContainerStatus={"ExitCode": 0})], 1, JobState.SUCCEEDED, ""),
        # one worker done, the other still to come: not finished
        ([task("complete")], 2, JobState.RUNNING, ""),
        ([task("complete", 1), task("running", 2)], 2, JobState.RUNNING, ""),
        ([task("complete", 1), task("complete", 2)], 2, JobState.SUCCEEDED, ""),
        # a failed worker decides the job only once the others ended too
        ([task("failed", 1), task("running", 2)], 2, JobState.RUNNING, ""),
        ([task("failed", 1), task("complete", 2)], 2, JobState.FAILED, "exit_code"),
        ([task("rejected", 1, Err="No such image: x")], 1, JobState.SYSTEM_ERROR, "rejected"),
        ([task("shutdown")], 1, JobState.CANCELLED, "shutdown"),
        ([task("weird")], 1, JobState.UNKNOWN, "unknown_status"),
    ],
)
def test_job_state_over_tasks(
    tasks: list[dict[str, Any]], workers: int, state: JobState, reason: str
) -> None:
    out = job_state(tasks, workers, 64 * _MIB, 60, NOW)
    assert (out.state, out.reason) == (state, reason)


def test_failure_messages_carry_the_swarm_text() -> None:
    rejected = job_state([task("rejected", Err="No such image: x:1")], 1, 0, 60, NOW)
    assert rejected.message == "rejected by the swarm: No such image: x:1"

    failed = task("failed", 2, Err="task: non-zero exit (3)", ContainerStatus={"ExitCode": 3})
    out = job_state([task("complete", 1), failed], 2, 0, 60, NOW)
    assert (out.state, out.exit_code) == (JobState.FAILED, 3)
    assert out.message.startswith("worker 2: exited with code 3")

    err = "starting container failed: exec: nosuch: executable file not found"
    start = task("failed", Message="starting", Err=err, ContainerStatus={"ExitCode": 127})
    out = job_state([start], 1, 0, 60, NOW)
    assert (out.state, out.reason) == (JobState.SYSTEM_ERROR, "start_failed")
    assert err in out.message

    oom = task("failed", Message="started", ContainerStatus={"ExitCode": 137})
    out = job_state([oom], 1, 32 * _MIB, 60, NOW)
    assert out.state is JobState.FAILED and "out of memory" in out.message
    assert "32 MiB" in out.message
    # no memory limit (IGNORE_LIMITS): a SIGKILL is just an exit code
    assert "out of memory" not in job_state([oom], 1, 0, 60, NOW).message


def test_a_task_pending_too_long_is_a_system_error() -> None:
    err = "no suitable node (insufficient resources on 1 node)"
    young = task("pending", age=10, Err=err)
    assert job_state([young], 1, 0, 60, NOW).state is JobState.QUEUED
    old = task("pending", age=61, Err=err)
    out = job_state([old], 1, 0, 60, NOW)
    assert (out.state, out.reason) == (JobState.SYSTEM_ERROR, "not_scheduled")
    assert err in out.message and "60 s" in out.message
    # with another worker still running, the job waits for it
    assert job_state([old, task("running", 2)], 2, 0, 60, NOW).state is JobState.RUNNING


def test_job_info_from_service_and_tasks() -> None:
    service = {
        "ID": "svc1",
        "CreatedAt": "2026-11-23T09:59:00.123456789Z",
        "Spec": {
            "Name": "job-1",
            "Labels": {"org.chrisproject.pman.fingerprint": "f", "org.chrisproject.pman": "true"},
            "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "img", "Command": ["copyplugin"], "Args": ["/out"]},
                "Resources": {"Limits": {"MemoryBytes": 64 * _MIB}},
            },
        },
    }
    info = job_info(service, [task("complete", 1), task("complete", 2)], 60, NOW)
    assert info.state is JobState.SUCCEEDED and info.exit_code == 0
    assert info.name == "job-1" and info.native_id == "svc1" and info.fingerprint == "f"
    assert info.command == ["copyplugin", "/out"] and info.image == "img"
    assert info.finished_at is not None and info.created_at is not None


def test_oom_killed_upgrades_a_killed_worker() -> None:
    killed = task("failed", 2, Message="started", ContainerStatus={"ExitCode": 137})
    killed["Status"]["ContainerStatus"]["ContainerID"] = "c2"
    assert killed_containers([task("complete", 1), killed]) == ["c2"]
    service = {
        "ID": "svc1",
        "Spec": {
            "Name": "job-1",
            "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {"Resources": {"Limits": {"MemoryBytes": 32 * _MIB}}},
        },
    }
    info = job_info(service, [task("complete", 1), killed], 60, NOW)
    assert info.reason == "killed" and info.message.startswith("worker 2: killed by SIGKILL")
    oom = oom_killed(info, service)
    assert (oom.reason, oom.state) == ("oom_killed", JobState.FAILED)
    assert oom.message == "worker 2: killed: out of memory (memory_limit 32 MiB), exit code 137"


def test_events_name_jobs() -> None:
    def event(kind: str, **attributes: str) -> dict[str, Any]:
        return {"Type": kind, "Action": "die", "Actor": {"Attributes": attributes}}

    ours = {"org.chrisproject.pman": "true", "com.docker.swarm.service.name": "job-1"}
    assert job_of_event(event("container", name="job-1.1.xyz", **ours)) == "job-1"
    assert job_of_event(event("container", name="other")) is None
    assert job_of_event(event("service", name="job-1")) == "job-1"
    assert "update" in CHANGED_EVENTS and "start" in CHANGED_EVENTS
