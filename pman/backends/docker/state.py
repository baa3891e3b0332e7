"""A container's state from what the Engine API says of it: the status table,
the exit code and OOM decisions, and the events that may change a job.
Pure: functions over the engine's dicts, no engine call."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pman.backends.kit.times import parse_time as parse_engine_time
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE
from pman.models import JobInfo, JobState, Reason

log = logging.getLogger(__name__)

#: Container ``State.Status`` -> JobState. "exited" (and Podman's "stopped") is
#: decided by the exit code and the OOM flag, see ``_state_of``.
#: https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Container/operation/ContainerInspect
#: https://docs.podman.io/en/latest/_static/api.html#tag/containers-(compat)
DOCKER_STATES: dict[str, JobState | None] = {
    "created": JobState.QUEUED,
    "configured": JobState.QUEUED,  # Podman
    "initialized": JobState.QUEUED,  # Podman
    "running": JobState.RUNNING,
    "paused": JobState.RUNNING,
    "restarting": JobState.RUNNING,
    "stopping": JobState.RUNNING,  # Podman
    "removing": JobState.UNKNOWN,  # on its way out: the tracker sees how it ends
    "exited": None,
    "stopped": None,  # Podman
    "dead": JobState.SYSTEM_ERROR,
}

#: the unfinished statuses, as Docker's list ``status`` filter spells them
ACTIVE_STATUSES = ("created", "running", "paused", "restarting")

_MIB = 1024 * 1024

#: statuses of a container that was created and not started yet
_NOT_STARTED = frozenset({"created", "configured", "initialized"})
#: pman starts a container as soon as it has created it, and a start slower
#: than PMAN_ENGINE_TIMEOUT fails the submission (which removes the container).
#: One still not started after this long (or twice the engine timeout) was
#: left by a pman that stopped between the two calls: it will never run.
NEVER_STARTED_AFTER_S = 60.0
NEVER_STARTED_MESSAGE = "never started: pman stopped between creating the container and starting it"


def never_started_after(engine_timeout: float) -> float:
    """Seconds after which a created, never started container is a system error."""
    return max(NEVER_STARTED_AFTER_S, 2 * engine_timeout)


def _abandoned(status: str, created: datetime | None, never_started_after: float) -> bool:
    if status not in _NOT_STARTED or created is None:
        return False
    return (datetime.now(UTC) - created).total_seconds() > never_started_after


def _state_of(
    attrs: dict[str, Any],
    memory_limit: int,
    oom_reported: bool,
    never_started_after: float = NEVER_STARTED_AFTER_S,
) -> tuple[JobState, Reason, str]:
    """(state, reason, message) of an inspected container.

    ``oom_reported`` is False for engines whose OOM flag cannot be trusted to
    be set (Podman with cgroup v1): there a SIGKILL under a memory limit is
    reported as a probable OOM kill.
    """
    st = attrs.get("State") or {}
    status = str(st.get("Status", "")).lower()
    if status not in DOCKER_STATES:
        log.warning("unknown container status %r of %s", status, attrs.get("Name"))
        return JobState.UNKNOWN, Reason.UNKNOWN_STATUS, f"engine reports status {status!r}"
    if _abandoned(status, parse_engine_time(attrs.get("Created")), never_started_after):
        return JobState.SYSTEM_ERROR, Reason.NEVER_STARTED, NEVER_STARTED_MESSAGE
    state = DOCKER_STATES[status]
    if state is not None:
        error = st.get("Error") or ""
        message = error if state is JobState.SYSTEM_ERROR and error else status
        return state, Reason.NONE, message
    code = st.get("ExitCode")
    # The OOM flag means some process of the container was killed for memory;
    # if the job still exited 0 it handled that itself and succeeded.
    limit = f"memory_limit {memory_limit // _MIB} MiB"
    oom = f"out of memory ({limit})" if st.get("OOMKilled") else ""
    if code == 0:
        return (
            JobState.SUCCEEDED,
            Reason.NONE,
            "exited with code 0" + (f"; a process hit {oom}" if oom else ""),
        )
    if oom:
        return JobState.FAILED, Reason.OOM_KILLED, f"killed: {oom}, exit code {code}"
    if st.get("Error") and parse_engine_time(st.get("StartedAt")) is None:
        return JobState.SYSTEM_ERROR, Reason.START_FAILED, f"could not start: {st['Error']}"
    if code == 137 and memory_limit and not oom_reported:
        return (
            JobState.FAILED,
            Reason.KILLED,
            f"killed by SIGKILL (exit code 137); this engine does not report OOM kills, "
            f"so it was most likely out of memory ({limit})",
        )
    return JobState.FAILED, Reason.EXIT_CODE, f"exited with code {code}"


#: the events after which a container may have ended or gone (Podman says
#: "remove" where Docker says "destroy"), and others that change its state
ENDED_EVENTS = frozenset({"die", "oom", "kill", "destroy", "remove"})
CHANGED_EVENTS = frozenset({"create", "start"})

_EXITED = re.compile(r"Exited \((-?\d+)\)")


def job_info_from_summary(
    c: dict[str, Any], never_started_after: float = NEVER_STARTED_AFTER_S
) -> JobInfo:
    """A container of the list endpoint: state, and the exit code from its Status text."""
    status = str(c.get("State", "")).lower()
    labels = c.get("Labels") or {}
    state = DOCKER_STATES.get(status, JobState.UNKNOWN)
    created = c.get("Created")
    created_at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
    if _abandoned(status, created_at, never_started_after):
        state = JobState.SYSTEM_ERROR
    exit_code = None
    if state is None:
        m = _EXITED.search(c.get("Status", ""))
        exit_code = int(m.group(1)) if m else None
        state = JobState.SUCCEEDED if exit_code == 0 else JobState.FAILED
    names = c.get("Names") or [""]
    return JobInfo(
        name=names[0].lstrip("/"),
        state=state,
        image=labels.get(LABEL_IMAGE) or c.get("Image", ""),
        exit_code=exit_code,
        message=c.get("Status", ""),
        created_at=created_at,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        labels=labels,
    )


def job_info_from_inspect(
    attrs: dict[str, Any],
    oom_reported: bool = True,
    never_started_after: float = NEVER_STARTED_AFTER_S,
) -> JobInfo:
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    st = attrs.get("State") or {}
    labels = config.get("Labels") or {}
    state, reason, message = _state_of(
        attrs, host.get("Memory") or 0, oom_reported, never_started_after
    )
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    return JobInfo(
        name=attrs.get("Name", "").lstrip("/"),
        state=state,
        image=labels.get(LABEL_IMAGE) or config.get("Image", ""),
        command=command,
        exit_code=st.get("ExitCode") if state.finished else None,
        reason=reason,
        message=message,
        created_at=parse_engine_time(attrs.get("Created")),
        started_at=parse_engine_time(st.get("StartedAt")),
        finished_at=parse_engine_time(st.get("FinishedAt")) if state.finished else None,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=attrs.get("Id"),
        labels=labels,
    )


def job_of_event(event: dict[str, Any]) -> str | None:
    """The name of the job a container event is about (the engine's event
    filter keeps to pman's containers)."""
    return str(event.get("Actor", {}).get("Attributes", {}).get("name", ""))
