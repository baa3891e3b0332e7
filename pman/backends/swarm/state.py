"""A swarm job's state from its service and tasks: the task state table, the
decision over every worker's task, and the events that may change a job.
Pure: functions over the engine's dicts, no engine call."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pman.backends.base import Outcome
from pman.backends.docker.state import CHANGED_EVENTS as CONTAINER_CHANGED_EVENTS
from pman.backends.kit.times import parse_time as parse_engine_time
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_MANAGED
from pman.models import JobInfo, JobState, Reason

log = logging.getLogger(__name__)

#: Swarm task ``Status.State`` -> JobState of that one task.
#: https://docs.docker.com/engine/swarm/how-swarm-mode-works/swarm-task-states/
#: https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Task
#: A "pending" task that stays so past PMAN_SWARM_PENDING_TIMEOUT (no node has
#: the resources, say) is a SYSTEM_ERROR, see ``job_state``.
TASK_STATES: dict[str, JobState] = {
    "new": JobState.QUEUED,
    "allocated": JobState.QUEUED,
    "pending": JobState.QUEUED,
    "assigned": JobState.QUEUED,
    "accepted": JobState.QUEUED,
    "preparing": JobState.QUEUED,
    "ready": JobState.QUEUED,
    "starting": JobState.QUEUED,
    "running": JobState.RUNNING,
    "complete": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    # stopped by the swarm on request: the service was removed or changed
    "shutdown": JobState.CANCELLED,
    # the node refused the task: image missing, bad mount...
    "rejected": JobState.SYSTEM_ERROR,
    # its node went away while it ran
    "orphaned": JobState.SYSTEM_ERROR,
    # on its way out: the tracker sees how it ends
    "remove": JobState.UNKNOWN,
}

#: the reason of a job whose task ended in a state of the swarm's doing (every
#: SYSTEM_ERROR state of TASK_STATES): the state's own name
TASK_ERROR_REASONS: dict[str, Reason] = {
    "rejected": Reason.REJECTED,
    "orphaned": Reason.ORPHANED,
}

#: the label Docker puts on a task's container naming its service
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
_MIB = 1024 * 1024
#: events that change a job's state without ending it (a service's "update": cancel)
CHANGED_EVENTS = CONTAINER_CHANGED_EVENTS | {"update"}


def _worker_index(task: dict[str, Any]) -> int:
    return int(task.get("Slot") or 0)


def _task_text(task: dict[str, Any]) -> str:
    st = task.get("Status") or {}
    return str(st.get("Err") or st.get("Message") or st.get("State", ""))


def job_state(
    tasks: list[dict[str, Any]],
    workers: int,
    memory_limit: int,
    pending_timeout: float,
    now: datetime,
) -> Outcome:
    """The job's state from all of its tasks.

    A job is decided once every worker has ended (a task that stays pending
    past ``pending_timeout`` seconds counts as ended: it may never run), so
    that its output folder is final when pman calls it finished; then a
    rejection or a task that never started is a SYSTEM_ERROR with the swarm's
    own text, a failed worker a FAILED job, and success needs every worker's.
    """
    ended: list[tuple[dict[str, Any], JobState]] = []
    live: list[JobState] = []
    for task in sorted(tasks, key=_worker_index):
        st = task.get("Status") or {}
        name = str(st.get("State", "")).lower()
        state = TASK_STATES.get(name)
        if state is None:
            log.warning("unknown swarm task state %r of task %s", name, task.get("ID"))
            state = JobState.UNKNOWN
        if name == "pending":
            since = parse_engine_time(task.get("CreatedAt"))
            if since is not None and (now - since).total_seconds() > pending_timeout:
                ended.append((task, JobState.SYSTEM_ERROR))
                continue
        if state.finished:
            ended.append((task, state))
        else:
            live.append(state)
    if live or len(ended) < workers:
        if JobState.RUNNING in live or any(s.finished for _, s in ended):
            return Outcome(JobState.RUNNING, message="running")
        if JobState.UNKNOWN in live:
            return Outcome(JobState.UNKNOWN, Reason.UNKNOWN_STATUS, "swarm task state unknown")
        return Outcome(JobState.QUEUED, message="waiting for the swarm to start it")

    for wanted in (JobState.SYSTEM_ERROR, JobState.FAILED, JobState.CANCELLED):
        for task, state in ended:
            if state is wanted:
                return _ended_outcome(task, state, memory_limit, pending_timeout, workers)
    return Outcome(
        JobState.SUCCEEDED,
        message="exited with code 0" if workers == 1 else f"all {workers} workers exited with 0",
        exit_code=0,
    )


def _ended_outcome(
    task: dict[str, Any], state: JobState, memory_limit: int, pending_timeout: float, workers: int
) -> Outcome:
    st = task.get("Status") or {}
    text = _task_text(task)
    who = f"worker {_worker_index(task)}: " if workers > 1 else ""
    code = (st.get("ContainerStatus") or {}).get("ExitCode")
    name = str(st.get("State", "")).lower()
    if name == "pending":
        return Outcome(
            JobState.SYSTEM_ERROR,
            Reason.NOT_SCHEDULED,
            f"{who}the swarm could not place the job within {pending_timeout:g} s: {text}",
        )
    if state is JobState.SYSTEM_ERROR:
        what = "rejected by the swarm" if name == "rejected" else name
        return Outcome(JobState.SYSTEM_ERROR, TASK_ERROR_REASONS[name], f"{who}{what}: {text}")
    if state is JobState.CANCELLED:
        return Outcome(JobState.CANCELLED, Reason.SHUTDOWN, f"{who}stopped by the swarm: {text}")
    # failed: a task that never got to "started" could not run at all
    if st.get("Message") != "started" and str(st.get("Err", "")).startswith("starting container"):
        return Outcome(
            JobState.SYSTEM_ERROR, Reason.START_FAILED, f"{who}could not start: {text}", code
        )
    if code == 137 and memory_limit:
        return Outcome(
            JobState.FAILED,
            Reason.KILLED,
            f"{who}killed by SIGKILL (exit code 137), most likely out of memory "
            f"(memory_limit {memory_limit // _MIB} MiB)",
            code,
        )
    return Outcome(JobState.FAILED, Reason.EXIT_CODE, f"{who}exited with code {code}: {text}", code)


def _workers_of(service: dict[str, Any]) -> int:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    if "Replicated" in mode:
        return int(mode["Replicated"].get("Replicas") or 1)
    job = mode.get("ReplicatedJob") or {}
    return int(job.get("TotalCompletions") or 1)


def job_info(
    service: dict[str, Any],
    tasks: list[dict[str, Any]],
    pending_timeout: float,
    now: datetime | None = None,
) -> JobInfo:
    """A service and its tasks as a JobInfo."""
    spec = service.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    limits = (template.get("Resources") or {}).get("Limits") or {}
    labels = spec.get("Labels") or {}
    outcome = job_state(
        tasks,
        _workers_of(service),
        int(limits.get("MemoryBytes") or 0),
        pending_timeout,
        now or datetime.now(UTC),
    )
    ran = [
        t
        for t in tasks
        if str((t.get("Status") or {}).get("State")) in ("running", "complete", "failed")
    ]
    # tasks keep the time of their latest state only: the start of the first
    # worker is known while it runs; afterwards its creation is the nearest
    started = min(
        (
            parse_engine_time(
                (t.get("Status") or {}).get("Timestamp")
                if (t.get("Status") or {}).get("State") == "running"
                else t.get("CreatedAt")
            )
            for t in ran
        ),
        default=None,
        key=lambda d: d or datetime.max.replace(tzinfo=UTC),
    )
    finished = None
    if outcome.state.finished:
        finished = max(
            (parse_engine_time((t.get("Status") or {}).get("Timestamp")) for t in tasks),
            default=None,
            key=lambda d: d or datetime.min.replace(tzinfo=UTC),
        )
    return JobInfo(
        name=str(spec.get("Name", "")),
        state=outcome.state,
        image=labels.get(LABEL_IMAGE) or str(container.get("Image", "")),
        command=[*(container.get("Command") or []), *(container.get("Args") or [])],
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        message=outcome.message,
        created_at=parse_engine_time(service.get("CreatedAt")),
        started_at=started,
        finished_at=finished,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=service.get("ID"),
        labels=labels,
    )


def killed_containers(tasks: list[dict[str, Any]]) -> list[str]:
    """The containers of the workers killed with 137: whether the kernel killed
    them for memory only their container's inspect says."""
    found = []
    for task in tasks:
        cs = (task.get("Status") or {}).get("ContainerStatus") or {}
        if cs.get("ExitCode") == 137 and cs.get("ContainerID"):
            found.append(str(cs["ContainerID"]))
    return found


def oom_killed(info: JobInfo, service: dict[str, Any]) -> JobInfo:
    """``info`` of a job with a worker "killed" (exit code 137) once the engine
    has said that worker's container was OOM-killed."""
    limits = (service["Spec"]["TaskTemplate"].get("Resources") or {}).get("Limits") or {}
    mib = int(limits.get("MemoryBytes") or 0) // _MIB
    who = info.message.split(": ", 1)[0] + ": " if info.message.startswith("worker") else ""
    return replace(
        info,
        reason=Reason.OOM_KILLED,
        message=f"{who}killed: out of memory (memory_limit {mib} MiB), exit code {info.exit_code}",
    )


def job_of_event(event: dict[str, Any]) -> str | None:
    """The name of the job an event of /events is about.

    Containers carry pman's labels and their service's name; service events
    carry no labels, so a removed service is named whoever made it (the
    tracker only looks at names it knows). Task state changes (a rejection)
    have no events: the tracker's safety-net poll finds those.
    """
    attributes = event.get("Actor", {}).get("Attributes", {})
    if event.get("Type") == "container":
        if attributes.get(LABEL_MANAGED) != "true":
            return None
        return str(attributes.get(SERVICE_NAME_LABEL, ""))
    return str(attributes.get("name", ""))
