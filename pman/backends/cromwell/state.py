"""A job's state from what Cromwell says of its workflow: the status tables
and the decisions, as pure functions of Cromwell's JSON (table-tested in
tests/unit/backends/cromwell/test_state.py without a server)."""

from __future__ import annotations

import logging
import re
from typing import Any

from pman.backends.base import Outcome
from pman.backends.cromwell.workflow import CALL_NAME
from pman.backends.kit.times import parse_time
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_JID
from pman.models import JobInfo, JobState, Reason

log = logging.getLogger(__name__)

#: Cromwell workflow status -> JobState.
#: https://cromwell.readthedocs.io/en/stable/api/RESTAPI/#workflowqueryparameter
#: ("On Hold": a workflow submitted with workflowOnHold=true, until released)
#: A workflow that is "Aborting" still has tasks that may write to the output
#: folder: it counts as running until Cromwell says "Aborted". "Failed" is
#: refined from its calls (see ``job_outcome``): the command's own failure or
#: a job that could not run.
WORKFLOW_STATES: dict[str, JobState] = {
    "On Hold": JobState.QUEUED,
    "Submitted": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Aborting": JobState.RUNNING,
    "Aborted": JobState.CANCELLED,
    "Succeeded": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
}

#: a call's ``executionStatus`` -> JobState of that one worker.
#: https://cromwell.readthedocs.io/en/stable/api/RESTAPI/#callmetadata
#: (Cromwell's ExecutionStatus enumeration). "Failed" without a returnCode is
#: a job that never ran its command (image missing, rejected by the
#: scheduler): SYSTEM_ERROR, see ``job_outcome``.
CALL_STATES: dict[str, JobState] = {
    "NotStarted": JobState.QUEUED,
    "WaitingForQueueSpace": JobState.QUEUED,
    "QueuedInCromwell": JobState.QUEUED,
    "Starting": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Aborting": JobState.RUNNING,
    # pman's workflows ask for no retries; a retry would still be to come
    "RetryableFailure": JobState.RUNNING,
    "Done": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
    "Aborted": JobState.CANCELLED,
    # skipped by a conditional (pman's workflow has none) or never startable
    "Bypassed": JobState.CANCELLED,
    "Unstartable": JobState.SYSTEM_ERROR,
}

#: workflow statuses of a workflow that has not ended
ACTIVE_STATUSES = ("Submitted", "Running", "Aborting", "On Hold")


def failure_messages(failures: Any) -> list[str]:
    """The innermost messages of Cromwell's nested ``failures`` (causes first)."""
    out: list[str] = []
    for failure in failures or []:
        if not isinstance(failure, dict):
            continue
        inner = failure_messages(failure.get("causedBy"))
        if inner:
            out.extend(m for m in inner if m not in out)
            continue
        text = str(failure.get("message") or failure.get("failure") or "").strip()
        if text and text not in out:
            out.append(text)
    return out


def latest_attempts(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One call per shard: its latest attempt, by shard."""
    best: dict[int, dict[str, Any]] = {}
    for call in calls:
        shard = int(call.get("shardIndex", -1))
        if shard not in best or int(call.get("attempt", 1)) >= int(best[shard].get("attempt", 1)):
            best[shard] = call
    return [best[k] for k in sorted(best)]


def job_calls(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's calls (one per worker, the latest attempt of each) in a
    workflow's metadata or logs."""
    return latest_attempts((answer.get("calls") or {}).get(CALL_NAME) or [])


def _time_limited(text: str) -> bool:
    return "time limit" in text.lower()


def job_outcome(metadata: dict[str, Any], memory_limit: int) -> Outcome:
    """The job's state from a workflow's metadata: the workflow's status, with
    an ended job's exit code and reason from its calls (one per worker)."""
    status = str(metadata.get("status", ""))
    state = WORKFLOW_STATES.get(status)
    if state is None:
        log.warning("unknown Cromwell workflow status %r of %s", status, metadata.get("id"))
        return Outcome(
            JobState.UNKNOWN, Reason.UNKNOWN_STATUS, f"Cromwell reports status {status!r}"
        )
    calls = job_calls(metadata)
    many = len(calls) > 1 or int((metadata.get("inputs") or {}).get("workers") or 1) > 1

    def who(call: dict[str, Any]) -> str:
        return f"worker {call.get('shardIndex')}: " if many else ""

    if state is JobState.QUEUED:
        return Outcome(state, message=f"Cromwell: {status}")
    if state is JobState.RUNNING:
        statuses = sorted({str(c.get("executionStatus")) for c in calls})
        detail = f" (tasks: {', '.join(statuses)})" if statuses else ""
        return Outcome(state, message=f"Cromwell: {status}{detail}")
    if state is JobState.CANCELLED:
        return Outcome(state, Reason.ABORTED, "aborted in Cromwell")
    if state is JobState.SUCCEEDED:
        return Outcome(
            state,
            message="exited with code 0" if not many else f"all {len(calls)} workers exited with 0",
            exit_code=0,
        )
    # Failed: the first failed call decides; a workflow that failed before any
    # call (Cromwell could not read or materialise it) could never run
    workflow_text = "; ".join(failure_messages(metadata.get("failures")))
    for call in calls:
        call_state = CALL_STATES.get(str(call.get("executionStatus")), JobState.UNKNOWN)
        if call_state not in (JobState.FAILED, JobState.SYSTEM_ERROR):
            continue
        text = "; ".join(failure_messages(call.get("failures"))) or workflow_text
        code = call.get("returnCode")
        if isinstance(code, int) and not isinstance(code, bool):
            if code == 137 and memory_limit:
                return Outcome(
                    JobState.FAILED,
                    Reason.KILLED,
                    f"{who(call)}killed by SIGKILL (exit code 137), most likely out of memory "
                    f"(memory_limit {memory_limit} MiB)",
                    code,
                )
            suffix = f": {text}" if text else ""
            return Outcome(
                JobState.FAILED,
                Reason.EXIT_CODE,
                f"{who(call)}exited with code {code}{suffix}",
                code,
            )
        if _time_limited(text):
            return Outcome(JobState.FAILED, Reason.TIME_LIMIT, f"{who(call)}{text}")
        return Outcome(JobState.SYSTEM_ERROR, Reason.NOT_RUN, f"{who(call)}could not run: {text}")
    if _time_limited(workflow_text):
        return Outcome(JobState.FAILED, Reason.TIME_LIMIT, workflow_text)
    return Outcome(
        JobState.SYSTEM_ERROR,
        Reason.WORKFLOW_FAILED,
        f"Cromwell failed the workflow: {workflow_text or 'no reason given'}",
    )


def _inputs_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """Workflow inputs without the workflow's name ("image", not "pman.image")."""
    inputs = metadata.get("inputs") or {}
    return {str(k).rpartition(".")[2]: v for k, v in inputs.items()}


def _memory_of(inputs: dict[str, Any]) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*MiB\s*", str(inputs.get("memory") or ""))
    return int(m.group(1)) if m else 0


def info_from_metadata(metadata: dict[str, Any]) -> JobInfo:
    """A workflow's metadata (``GET /api/workflows/v1/{id}/metadata``) as a JobInfo."""
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    inputs = _inputs_of(metadata)
    outcome = job_outcome({**metadata, "inputs": inputs}, _memory_of(inputs))
    command = inputs.get("argv")
    return JobInfo(
        name=labels.get(LABEL_JID, ""),
        state=outcome.state,
        image=labels.get(LABEL_IMAGE) or str(inputs.get("image") or ""),
        command=[str(c) for c in command] if isinstance(command, list) else [],
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        message=outcome.message,
        created_at=parse_time(metadata.get("submission")),
        started_at=parse_time(metadata.get("start")),
        finished_at=parse_time(metadata.get("end")) if outcome.state.finished else None,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=str(metadata.get("id") or "") or None,
        labels=labels,
    )


def info_from_query(result: dict[str, Any]) -> JobInfo:
    """One result of ``/query`` (with its labels) as a JobInfo: the workflow's
    status only; ``get`` reads the metadata for exit codes and reasons."""
    labels = {str(k): str(v) for k, v in (result.get("labels") or {}).items()}
    status = str(result.get("status", ""))
    state = WORKFLOW_STATES.get(status)
    if state is None:
        log.warning("unknown Cromwell workflow status %r of %s", status, result.get("id"))
        state = JobState.UNKNOWN
    return JobInfo(
        name=labels.get(LABEL_JID, ""),
        state=state,
        image=labels.get(LABEL_IMAGE, ""),
        message=f"Cromwell: {status}",
        created_at=parse_time(result.get("submission")),
        started_at=parse_time(result.get("start")),
        finished_at=parse_time(result.get("end")) if state.finished else None,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=str(result.get("id") or "") or None,
        labels=labels,
    )
