"""A job's state from what SLURM and the batch script say: pure functions over
squeue's rows (:class:`~pman.backends.slurm.client.QueueRow`) and the status
files the script wrote, table-tested without a cluster.

A job is one batch job, or one array job whose tasks are its workers; it is
decided once every worker has ended, so its output folder is final.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pman.backends.base import Outcome
from pman.backends.kit.times import parse_time
from pman.backends.slurm.client import QueueRow
from pman.backends.slurm.comment import parse_comment
from pman.labels import LABEL_AUID, LABEL_FINGERPRINT, LABEL_INSTANCE, LABEL_MANAGED
from pman.models import JobInfo, JobState, Reason

log = logging.getLogger(__name__)

#: SLURM job state -> (JobState, words for messages).
#: https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
#: https://slurm.schedmd.com/job_state_codes.html
#: A job is finished only once it left COMPLETING: its processes (and the
#: script's clean-up of its container) are done and its output is final.
SLURM_STATES: dict[str, tuple[JobState, str]] = {
    "PENDING": (JobState.QUEUED, "pending"),
    "CONFIGURING": (JobState.QUEUED, "waiting for its nodes to be ready"),
    "REQUEUED": (JobState.QUEUED, "requeued"),
    "REQUEUE_FED": (JobState.QUEUED, "requeued by the federation"),
    "REQUEUE_HOLD": (JobState.QUEUED, "held after a requeue"),
    "RESV_DEL_HOLD": (JobState.QUEUED, "held: its reservation was deleted"),
    "RUNNING": (JobState.RUNNING, "running"),
    "COMPLETING": (JobState.RUNNING, "completing"),
    "RESIZING": (JobState.RUNNING, "resizing"),
    "SIGNALING": (JobState.RUNNING, "being signalled"),
    "STAGE_OUT": (JobState.RUNNING, "staging out"),
    # paused with its allocation kept (STOPPED) or released (SUSPENDED): it resumes
    "SUSPENDED": (JobState.RUNNING, "suspended"),
    "STOPPED": (JobState.RUNNING, "stopped (SIGSTOP)"),
    "COMPLETED": (JobState.SUCCEEDED, "completed"),
    "FAILED": (JobState.FAILED, "failed"),
    # the job's own doing: it ran out of its time or memory
    "TIMEOUT": (JobState.FAILED, "killed: time limit reached"),
    "OUT_OF_MEMORY": (JobState.FAILED, "killed: out of memory"),
    # held after an exit code the site marks special (RequeueExitHold)
    "SPECIAL_EXIT": (JobState.FAILED, "ended with a special exit code"),
    "CANCELLED": (JobState.CANCELLED, "cancelled"),
    # the infrastructure's doing: the job could not run (to its end)
    "NODE_FAIL": (JobState.SYSTEM_ERROR, "its node failed"),
    "BOOT_FAIL": (JobState.SYSTEM_ERROR, "its node failed to boot"),
    "PREEMPTED": (JobState.SYSTEM_ERROR, "preempted by another job"),
    "DEADLINE": (JobState.SYSTEM_ERROR, "could not run before its deadline"),
    "REVOKED": (JobState.SYSTEM_ERROR, "revoked: a sibling cluster of the federation runs it"),
}

#: the reason of a job that ended in a state of the infrastructure's doing
#: (every SYSTEM_ERROR state of SLURM_STATES): the state's own name
INFRASTRUCTURE_REASONS: dict[str, Reason] = {
    "NODE_FAIL": Reason.NODE_FAIL,
    "BOOT_FAIL": Reason.BOOT_FAIL,
    "PREEMPTED": Reason.PREEMPTED,
    "DEADLINE": Reason.DEADLINE,
    "REVOKED": Reason.REVOKED,
}

#: the status files the batch script writes in the job's folder, ``<kind>.<worker>``
STATUS_FILES = ("exit", "oom", "error")


def slurm_time(text: str) -> datetime | None:
    """SLURM prints local time without a zone; "N/A", "Unknown", "NONE" are no time."""
    return parse_time(text, naive_is_local=True)


def decode_exit_status(status: int | None) -> tuple[int | None, int]:
    """(exit code, signal) of a raw wait status as squeue's exit_code and
    slurmrestd report it: exit code = status >> 8, signal = status & 0x7f."""
    if status is None:
        return None, 0
    return (status >> 8) & 0xFF, status & 0x7F


def _state_name(slurm_state: str) -> str:
    """A state as squeue prints it without its flags ("CANCELLED by 0")."""
    return re.split(r"[ +]", slurm_state.strip(), maxsplit=1)[0].upper()


def state_of(slurm_state: str) -> tuple[JobState, str]:
    """The row of SLURM_STATES for a state as squeue prints it (flags after a
    space or '+', as in "CANCELLED by 0", are dropped); UNKNOWN with a warning."""
    name = _state_name(slurm_state)
    if name not in SLURM_STATES:
        log.warning("unknown SLURM job state %r", slurm_state)
        return JobState.UNKNOWN, f"SLURM state {slurm_state!r}"
    return SLURM_STATES[name]


@dataclass(frozen=True)
class WorkerFiles:
    """What the batch script recorded about one worker."""

    exit_code: int | None = None
    oom: bool = False
    error: str = ""


def status_file(name: str) -> tuple[str, int] | None:
    """(kind, worker) of a status file's name (``exit.2``), None for other files."""
    kind, dot, index = name.partition(".")
    if not dot or not index.isdigit() or kind not in STATUS_FILES:
        return None
    return kind, int(index)


def worker_files(texts: Mapping[tuple[str, int], str]) -> dict[int, WorkerFiles]:
    """What the script recorded per worker, from the texts of its status files
    by (kind, worker)."""
    found: dict[int, dict[str, Any]] = {}
    for (kind, index), raw in texts.items():
        text = raw.strip()
        slot = found.setdefault(index, {})
        if kind == "exit":
            slot["exit_code"] = int(text) if text.lstrip("-").isdigit() else None
        elif kind == "oom":
            slot["oom"] = True
        else:
            slot["error"] = text or "the job could not start"
    return {i: WorkerFiles(**v) for i, v in found.items()}


def worker_of(row: QueueRow) -> int:
    return row.array_task_id if row.array_task_id is not None else 1


def _ended(
    row: QueueRow,
    files: WorkerFiles,
    memory_limit: int,
    timelimit: int,
    workers: int,
) -> Outcome:
    state, words = state_of(row.state)
    name = _state_name(row.state)
    who = f"worker {worker_of(row)}: " if workers > 1 else ""
    code, signal = decode_exit_status(row.exit_status)
    # the command's own exit code, as the script saw it, is the truest
    if files.exit_code is not None:
        code, signal = files.exit_code, 0
    elif signal and not code and signal < 125:
        code = 128 + signal
    elif signal:
        code = None  # SLURM's own marker (0:125 for an OOM kill), no exit code
    if files.error:
        return Outcome(JobState.SYSTEM_ERROR, Reason.START_FAILED, f"{who}{files.error}", code)
    if name == "TIMEOUT":
        return Outcome(
            state,
            Reason.TIMEOUT,
            f"{who}killed: time limit of {timelimit} min reached (SLURM state TIMEOUT)",
            code,
        )
    if name == "OUT_OF_MEMORY" or files.oom:
        return Outcome(
            JobState.FAILED,
            Reason.OOM_KILLED,
            f"{who}killed: out of memory (memory_limit {memory_limit} MiB)"
            + (f", exit code {code}" if code is not None else "")
            + (" (SLURM state OUT_OF_MEMORY)" if name == "OUT_OF_MEMORY" else ""),
            code,
        )
    if state is JobState.SUCCEEDED:
        return Outcome(state, Reason.NONE, f"{who}exited with code 0", 0)
    if state is JobState.FAILED:
        what = f"exited with code {code}" if code is not None else words
        if name != "FAILED":
            what += f" (SLURM state {name})"
        return Outcome(state, Reason.EXIT_CODE, f"{who}{what}", code)
    if state is JobState.CANCELLED:
        return Outcome(state, Reason.CANCELLED, f"{who}cancelled (scancel)", code)
    return Outcome(state, INFRASTRUCTURE_REASONS[name], f"{who}{words} (SLURM state {name})", code)


def job_state(
    rows: list[QueueRow],
    workers: int,
    memory_limit: int,
    timelimit: int,
    files: dict[int, WorkerFiles] | None = None,
) -> Outcome:
    """The job's state from the squeue rows of its tasks (one per worker).

    As for a swarm service, the job is decided once every worker has ended,
    so its output folder is final: then a system error outweighs a failure,
    a failure a cancellation, and success needs every worker's. A worker
    squeue does not list (the active-only view leaves finished tasks out)
    counts as ended.
    """
    files = files or {}
    live: list[tuple[QueueRow, JobState, str]] = []
    ended: list[tuple[QueueRow, JobState]] = []
    for row in sorted(rows, key=worker_of):
        state, words = state_of(row.state)
        if state.finished:
            ended.append((row, state))
        else:
            live.append((row, state, words))
    if live:
        states = {s for _, s, _ in live}
        if JobState.RUNNING in states or ended or len(rows) < workers:
            running = sum(1 for _, s, _ in live if s is JobState.RUNNING)
            message = "running" if workers == 1 else f"{running} of {workers} workers running"
            return Outcome(JobState.RUNNING, message=message)
        if JobState.UNKNOWN in states:
            return Outcome(JobState.UNKNOWN, Reason.UNKNOWN_STATUS, live[0][2])
        row, _, words = live[0]
        reason = row.reason if row.reason and row.reason not in ("None", "(null)") else ""
        return Outcome(JobState.QUEUED, message=words + (f": {reason}" if reason else ""))
    if not ended:
        return Outcome(JobState.QUEUED, message="submitted")
    outcomes = [
        _ended(row, files.get(worker_of(row), WorkerFiles()), memory_limit, timelimit, workers)
        for row, _ in ended
    ]
    for wanted in (JobState.SYSTEM_ERROR, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN):
        for outcome in outcomes:
            if outcome.state is wanted:
                return outcome
    return Outcome(
        JobState.SUCCEEDED,
        message="exited with code 0" if workers == 1 else f"all {workers} workers exited with 0",
        exit_code=0,
    )


def state_from_files(files: dict[int, WorkerFiles], workers: int, memory_limit: int) -> Outcome:
    """The state of a job SLURM no longer knows (older than MinJobAge, or lost
    by slurmctld), from what its script recorded; SYSTEM_ERROR if it recorded
    too little."""
    if len(files) < workers or any(f.exit_code is None and not f.error for f in files.values()):
        return Outcome(
            JobState.SYSTEM_ERROR,
            Reason.VANISHED,
            "SLURM no longer knows the job and its script recorded no end for every worker "
            "(killed, or its node failed?)",
        )
    rows = [
        QueueRow(
            job_id="",
            array_job_id="",
            array_task_id=i if workers > 1 else None,
            state="COMPLETED" if f.exit_code == 0 and not f.error else "FAILED",
            exit_status=None,
            submit_time="",
            start_time="",
            end_time="",
            reason="",
            name="",
            comment="",
        )
        for i, f in sorted(files.items())
    ]
    return job_state(rows, workers, memory_limit, 0, files)


def earliest(times: Iterable[datetime | None]) -> datetime | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


def latest(times: Iterable[datetime | None]) -> datetime | None:
    found = [t for t in times if t is not None]
    return max(found) if found else None


def with_outcome(
    base: JobInfo,
    outcome: Outcome,
    started: datetime | None = None,
    finished: datetime | None = None,
) -> JobInfo:
    """``base`` (what pman submitted) in the state ``outcome``."""
    return replace(
        base,
        state=outcome.state,
        reason=outcome.reason,
        message=outcome.message,
        exit_code=outcome.exit_code if outcome.state.finished else None,
        started_at=started,
        finished_at=finished,
    )


def job_info(base: JobInfo, rows: list[QueueRow], outcome: Outcome) -> JobInfo:
    """``base`` in the state ``outcome`` worked out from ``rows`` (the job's
    tasks): started when its first worker started, finished when its last ended."""
    started = earliest(slurm_time(r.start_time) for r in rows)
    finished = latest(slurm_time(r.end_time) for r in rows) if outcome.state.finished else None
    return with_outcome(base, outcome, started, finished)


@dataclass(frozen=True)
class ListedJob:
    """One of pman's jobs in squeue's list: its latest submission's rows."""

    name: str
    job_id: str
    #: the fields of its --comment
    fields: dict[str, str]
    rows: list[QueueRow]


def pman_jobs(rows: list[QueueRow]) -> list[ListedJob]:
    """pman's jobs among squeue's rows (marked by their --comment), one per
    job name: its latest submission (the highest SLURM job id)."""
    groups: dict[str, list[QueueRow]] = {}
    marks: dict[str, dict[str, str]] = {}
    for row in rows:
        fields = parse_comment(row.comment)
        if fields is None:
            continue
        groups.setdefault(row.array_job_id, []).append(row)
        marks[row.array_job_id] = fields
    newest: dict[str, str] = {}
    for job_id, group in groups.items():
        name = group[0].name
        if name not in newest or int(job_id) > int(newest[name]):
            newest[name] = job_id
    return [
        ListedJob(name, job_id, marks[job_id], groups[job_id]) for name, job_id in newest.items()
    ]


def listed_info(job: ListedJob, timelimit: int) -> JobInfo:
    """What squeue's list alone says about a job of pman's (no memory limit, no
    status files: the tracker asks ``get`` about a job whose state changed)."""
    workers = int(job.fields.get("workers") or 1)
    outcome = job_state(job.rows, workers, 0, timelimit)
    labels = {
        LABEL_MANAGED: "true",
        LABEL_INSTANCE: job.fields.get("instance", ""),
        LABEL_FINGERPRINT: job.fields.get("fingerprint", ""),
        LABEL_AUID: job.fields.get("auid", ""),
    }
    return JobInfo(
        name=job.name,
        state=outcome.state,
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        message=outcome.message,
        created_at=earliest(slurm_time(r.submit_time) for r in job.rows),
        started_at=earliest(slurm_time(r.start_time) for r in job.rows),
        fingerprint=job.fields.get("fingerprint") or None,
        native_id=job.job_id,
        labels=labels,
    )
