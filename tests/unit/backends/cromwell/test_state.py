"""Cromwell's statuses and metadata as job states, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from pman.backends.cromwell.state import (
    CALL_STATES,
    WORKFLOW_STATES,
    failure_messages,
    info_from_metadata,
    info_from_query,
    job_outcome,
)
from pman.models import JobState
from tests.unit.backends.cromwell.fakes import JID, MANAGED, WID, call, md


def test_state_tables_cover_cromwells_statuses() -> None:
    assert set(WORKFLOW_STATES) == {
        "Submitted", "Running", "Aborting", "Aborted", "Succeeded", "Failed", "On Hold",
    }  # fmt: skip
    assert set(CALL_STATES) == {
        "NotStarted", "WaitingForQueueSpace", "QueuedInCromwell", "Starting", "Running",
        "Aborting", "RetryableFailure", "Done", "Failed", "Aborted", "Bypassed", "Unstartable",
    }  # fmt: skip
    assert WORKFLOW_STATES["Aborting"] is JobState.RUNNING  # its tasks may still write
    assert WORKFLOW_STATES["Aborted"] is JobState.CANCELLED


RC3 = [{"message": "Job pman.plugin:0:1 exited with return code 3", "causedBy": []}]


@pytest.mark.parametrize(
    ("metadata", "state", "reason", "code"),
    [
        (md("Submitted"), JobState.QUEUED, "", None),
        (md("On Hold"), JobState.QUEUED, "", None),
        (md("Running", call("QueuedInCromwell")), JobState.RUNNING, "", None),
        (md("Aborting", call("Running")), JobState.RUNNING, "", None),
        (md("Aborted", call("Aborted")), JobState.CANCELLED, "aborted", None),
        (md("Succeeded", call("Done", rc=0)), JobState.SUCCEEDED, "", 0),
        (md("Failed", call("Failed", rc=3, failures=RC3)), JobState.FAILED, "exit_code", 3),
        (md("Failed", call("Failed", rc=137)), JobState.FAILED, "killed", 137),
        # no return code: the command never ran
        (
            md("Failed", call("Failed", failures=[{"message": "docker image not found: x"}])),
            JobState.SYSTEM_ERROR,
            "not_run",
            None,
        ),
        (
            md("Failed", call("Failed", failures=[{"message": "exceeded its time limit"}])),
            JobState.FAILED,
            "time_limit",
            None,
        ),
        # failed before any call: Cromwell could not read the workflow
        (
            md("Failed", failures=[{"message": "Workflow input processing failed"}]),
            JobState.SYSTEM_ERROR,
            "workflow_failed",
            None,
        ),
        (md("Exploded"), JobState.UNKNOWN, "unknown_status", None),
    ],
)
def test_job_outcome(metadata: dict[str, Any], state: JobState, reason: str, code: Any) -> None:
    out = job_outcome(metadata, 64)
    assert (out.state, out.reason, out.exit_code) == (state, reason, code)


def test_outcome_messages_name_the_worker_and_cromwells_reason() -> None:
    out = job_outcome(md("Failed", call("Failed", rc=3, failures=RC3)), 64)
    assert out.message == "exited with code 3: Job pman.plugin:0:1 exited with return code 3"
    out = job_outcome(md("Failed", call("Failed", rc=137)), 64)
    assert "most likely out of memory (memory_limit 64 MiB)" in out.message
    # two workers: the failed one is named; a retried shard counts by its latest attempt
    two = md(
        "Failed",
        call("Done", 0, rc=0),
        call("Failed", 1, rc=9, attempt=1),
        call("Failed", 1, rc=5, attempt=2),
        workers=2,
    )
    out = job_outcome(two, 64)
    assert (out.exit_code, out.message) == (5, "worker 1: exited with code 5")
    out = job_outcome(md("Succeeded", call("Done", 0, rc=0), call("Done", 1, rc=0), workers=2), 64)
    assert out.message == "all 2 workers exited with 0"


def test_failure_messages_are_the_innermost_causes() -> None:
    nested = [
        {
            "message": "Workflow failed",
            "causedBy": [
                {"message": "a", "causedBy": []},
                {"message": "wrapper", "causedBy": [{"message": "b"}, {"message": "a"}]},
            ],
        }
    ]
    assert failure_messages(nested) == ["a", "b"]
    assert failure_messages(None) == []


def test_info_from_metadata_and_query() -> None:
    labels = {MANAGED: "true", JID: "job-1", "org.chrisproject.pman.fingerprint": "fp"}
    metadata = md(
        "Succeeded",
        call("Done", rc=0),
        submission="2026-01-02T03:04:05.678Z",
        start="2026-01-02T03:04:06.000Z",
        end="2026-01-02T03:04:09.000Z",
        labels=labels,
        inputs={"pman.argv": ["copyplugin", "/share/outgoing"], "pman.image": "img"},
    )
    info = info_from_metadata(metadata)
    assert (info.name, info.state, info.exit_code) == ("job-1", JobState.SUCCEEDED, 0)
    assert info.command == ["copyplugin", "/share/outgoing"] and info.image == "img"
    assert info.native_id == WID and info.fingerprint == "fp"
    assert info.created_at is not None and info.created_at.microsecond == 678000
    assert info.finished_at is not None and info.finished_at.second == 9

    q = info_from_query({"id": WID, "status": "Running", "labels": labels, "start": "x"})
    assert (q.name, q.state, q.started_at, q.finished_at) == ("job-1", JobState.RUNNING, None, None)
