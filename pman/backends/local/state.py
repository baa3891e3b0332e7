"""A local job's state from the records in its folder: pure functions of what
the supervisor (:mod:`pman.backends.local.runner`) wrote, table-tested in
tests/unit/backends/local/test_state.py without running a job."""

from __future__ import annotations

import signal
from typing import Any

from pman.backends.kit.times import parse_time
from pman.models import JobInfo, JobState, Reason

#: How the files of a job folder translate to a state (pman's own runner:
#: pman/backends/local/runner.py). "vanished" means the supervisor is gone
#: without recording an outcome (host rebooted, killed with SIGKILL).
LOCAL_STATES: dict[str, JobState] = {
    "submitted": JobState.QUEUED,
    "running": JobState.RUNNING,
    "exited_0": JobState.SUCCEEDED,
    "exited_nonzero": JobState.FAILED,
    "signalled": JobState.FAILED,
    #: killed by the kernel for its memory_limit (the job's cgroup counted it)
    "oom_killed": JobState.FAILED,
    "not_started": JobState.SYSTEM_ERROR,
    "vanished": JobState.SYSTEM_ERROR,
    #: ended after a cancel (``cancelled.json``), however its process ended
    "cancelled": JobState.CANCELLED,
}

#: seconds a job folder without a supervisor record is taken for one whose
#: supervisor is still starting, not one that vanished
SUPERVISOR_GRACE_S = 60


def job_info(
    name: str,
    spec: dict[str, Any],
    runner: dict[str, Any] | None,
    alive: bool,
    started: dict[str, Any] | None,
    result: dict[str, Any] | None,
    cancelled: bool,
    now: float,
) -> JobInfo:
    """The job from its records: ``spec.json``, ``runner.json`` (the
    supervisor's pid; ``alive`` if that process still runs), ``started.json``,
    ``result.json`` (None where missing), whether ``cancelled.json`` exists,
    and the time ``now`` (seconds since the epoch)."""
    created_at = parse_time(spec["created_at"])
    exit_code = None
    reason = Reason.NONE
    if result is not None:
        exit_code = result["exit_code"]
        if result.get("error"):
            phase, message = "not_started", result["error"]
            reason = Reason.START_FAILED
        elif result.get("oom"):
            mib = (spec.get("cgroup") or {}).get("memory_mib")
            phase, reason = "oom_killed", Reason.OOM_KILLED
            message = f"killed: out of memory (memory_limit {mib} MiB), exit code {exit_code}"
        elif "signal" in result:
            sig = signal.Signals(result["signal"]).name
            phase, message, reason = "signalled", f"killed by {sig}", Reason.SIGNALLED
        elif exit_code == 0:
            phase, message = "exited_0", "exited with code 0"
        else:
            phase, message = "exited_nonzero", f"exited with code {exit_code}"
            reason = Reason.EXIT_CODE
    elif alive:
        phase = "running" if started else "submitted"
        message = "running" if started else "starting"
    elif runner is None and created_at and now - created_at.timestamp() < SUPERVISOR_GRACE_S:
        phase, message = "submitted", "waiting for the supervisor"
    else:
        phase = "vanished"
        message = "the job's supervisor ended without recording an outcome"
        reason = Reason.SUPERVISOR_LOST
    if phase not in ("running", "submitted") and cancelled:
        phase, message, reason = "cancelled", "cancelled", Reason.CANCELLED
    return JobInfo(
        name=name,
        state=LOCAL_STATES[phase],
        image=spec["image"],
        command=spec["command"],
        exit_code=exit_code,
        reason=reason,
        message=message,
        created_at=created_at,
        started_at=parse_time(started["started_at"]) if started else None,
        finished_at=parse_time(result["finished_at"]) if result else None,
        fingerprint=spec.get("fingerprint"),
        labels=spec.get("labels") or {},
    )
