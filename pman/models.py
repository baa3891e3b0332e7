"""Engine-neutral job description, job state and its reason (plain dataclasses)."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

PluginType = Literal["ds", "fs", "ts"]

#: Where every job sees its data, whatever the engine.
INCOMING = "/share/incoming"
OUTGOING = "/share/outgoing"


class JobState(enum.Enum):
    """pman's internal job state; the v1 API maps it to upstream's five strings."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: the job's own command failed: non-zero exit, OOM kill, time limit
    FAILED = "failed"
    #: the job could not run: image missing, rejected by the scheduler
    SYSTEM_ERROR = "system_error"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.SYSTEM_ERROR, JobState.CANCELLED}

#: pman's states as upstream's five v1 status strings (the API's edge, and webhooks)
V1_STATUS: dict[JobState, str] = {
    JobState.QUEUED: "notstarted",
    JobState.RUNNING: "started",
    JobState.SUCCEEDED: "finishedSuccessfully",
    JobState.FAILED: "finishedWithError",
    JobState.SYSTEM_ERROR: "finishedWithError",
    JobState.CANCELLED: "finishedWithError",
    JobState.UNKNOWN: "undefined",
}


class Reason(enum.StrEnum):
    """Why a job is in its state: the ``reason`` clients see (GET /api/v1/jobs/).

    Every reason pman gives is a member; a StrEnum, so each is its string on
    the wire (JSON, the registry's column) and equal to it. A reason pman has
    no member for (one a newer pman stored, or an engine's own word) is read
    with ``Reason.parse``: an *unlisted* Reason that keeps the text as its
    value, so clients still see it; ``Reason(text)`` itself refuses it."""

    #: nothing to explain (running, succeeded, or a queued job on the engine)
    NONE = ""
    # ---- pman's own
    #: waiting in pman's queue (Phase.QUEUED)
    PMAN_QUEUE = "pman_queue"
    #: a withdrawn submission (Phase.WITHDRAWN; no client sees it)
    PMAN_WITHDRAW = "pman_withdraw"
    #: a user cancelled it (POST /api/v1/<jid>/cancel/), or the engine says so
    CANCELLED = "cancelled"
    #: deleted while it ran or waited
    DELETED = "deleted"
    #: pman stopped between recording the job and submitting it
    NEVER_SUBMITTED = "never_submitted"
    #: the engine no longer knows the job
    VANISHED = "vanished"
    #: it could not start (from pman's queue, or the engine could not start it)
    START_FAILED = "start_failed"
    # ---- the engines'
    #: the job's command exited non-zero
    EXIT_CODE = "exit_code"
    OOM_KILLED = "oom_killed"
    #: SIGKILL (exit code 137) on an engine that does not report OOM kills
    KILLED = "killed"
    SIGNALLED = "signalled"
    TIME_LIMIT = "time_limit"
    #: SLURM's TIMEOUT
    TIMEOUT = "timeout"
    #: Docker: created but never started (pman stopped in between)
    NEVER_STARTED = "never_started"
    #: local: the job's supervisor ended without recording an outcome
    SUPERVISOR_LOST = "supervisor_lost"
    UNKNOWN_STATUS = "unknown_status"
    IMAGE_PULL_FAILED = "image_pull_failed"
    CONFIG_ERROR = "config_error"
    NOT_SCHEDULED = "not_scheduled"
    EVICTED = "evicted"
    POD_FAILED = "pod_failed"
    #: Kubernetes: the Job failed and no pod tells why
    JOB_FAILED = "job_failed"
    #: Kubernetes: the Job is suspended (a cancel)
    SUSPENDED = "suspended"
    #: swarm: the node refused the task
    REJECTED = "rejected"
    #: swarm: the task's node went away
    ORPHANED = "orphaned"
    #: swarm: stopped by the swarm
    SHUTDOWN = "shutdown"
    #: Cromwell
    ABORTED = "aborted"
    NOT_RUN = "not_run"
    WORKFLOW_FAILED = "workflow_failed"
    #: SLURM's states of a job the infrastructure could not run
    NODE_FAIL = "node_fail"
    BOOT_FAIL = "boot_fail"
    PREEMPTED = "preempted"
    DEADLINE = "deadline"
    REVOKED = "revoked"

    @classmethod
    def parse(cls, text: str | None) -> Reason:
        """The member for ``text`` (None or "": ``NONE``); for a text pman has no
        member for, an unlisted Reason whose value is that text."""
        try:
            return cls(text or "")
        except ValueError:
            pass
        unlisted = str.__new__(cls, text)
        unlisted._name_ = None  # type: ignore[assignment]
        unlisted._value_ = str(text)
        return unlisted

    @property
    def listed(self) -> bool:
        """Whether this is one of the members (not a text read with ``parse``)."""
        return self._name_ is not None

    def __reduce_ex__(self, protocol: object) -> tuple[object, tuple[str]]:
        # by value through parse, so an unlisted reason survives a copy or pickle
        return type(self).parse, (self._value_,)


@dataclass(frozen=True)
class JobRequest:
    """A validated v1 job request, field for field (see DESIGN.md §3)."""

    jid: str
    args: list[str]
    args_path_flags: list[str]
    auid: str
    number_of_workers: int
    cpu_limit: int
    memory_limit: int
    gpu_limit: int
    image: str
    entrypoint: list[str]
    type: PluginType
    env: list[str]
    input_dir: str
    output_dir: str
    #: where pman POSTs the job's state transitions (pman's extension; upstream has none)
    callback_url: str | None = None

    def fingerprint(self) -> str:
        """A digest of the whole request: two requests are the same job iff equal."""
        fields = asdict(self)
        if fields["callback_url"] is None:
            # a request without a callback digests as before the field existed, so
            # jobs recorded (and labelled on engines) by an older pman still match
            del fields["callback_url"]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Resources:
    number_of_workers: int
    #: CPU limit in millicores (1000 = one CPU)
    cpu_limit: int
    #: memory limit in mebibytes (MiB)
    memory_limit: int
    #: number of GPUs
    gpu_limit: int


@dataclass(frozen=True)
class Mounts:
    """The job's data directories.

    ``input_dir``/``output_dir`` are normalised paths relative to STOREBASE;
    ``input_host``/``output_host`` are the absolute host paths when pman can see
    STOREBASE itself (host storage), else None (the backend resolves them).
    """

    input_dir: str
    output_dir: str
    input_host: Path | None = None
    output_host: Path | None = None


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to run one job."""

    name: str
    image: str
    command: list[str]
    env: list[str]
    resources: Resources
    mounts: Mounts
    plugin_type: PluginType
    auid: str
    fingerprint: str
    uid: int | None = None
    gid: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: the request's callback_url: the registry keeps it, no engine sees it
    callback_url: str | None = None


@dataclass(frozen=True)
class JobInfo:
    """What a backend knows about one job."""

    name: str
    state: JobState
    image: str = ""
    command: list[str] = field(default_factory=list)
    exit_code: int | None = None
    #: why the job is in its state (clients see it): always a Reason, a bare
    #: string is refused (see ``__post_init__``)
    reason: Reason = Reason.NONE
    #: one human sentence about the state
    message: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: JobRequest.fingerprint of the request that created the job, if recorded
    fingerprint: str | None = None
    #: the engine's own id of the job (container id, job folder...)
    native_id: str | None = None
    #: labels the engine keeps with the job (pman's own and JOB_LABELS)
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_reason(self.reason, "JobInfo")

    @property
    def timestamp(self) -> datetime | None:
        """The most recent moment the job changed state."""
        return self.finished_at or self.started_at or self.created_at


def check_reason(reason: object, where: str) -> None:
    """Refuse a reason that is no Reason (a bare string, even a member's value):
    every reason a client can see is one of Reason's members, or a text read
    back with ``Reason.parse``."""
    if not isinstance(reason, Reason):
        raise TypeError(f"{where}.reason must be a pman.models.Reason, not {reason!r}")
