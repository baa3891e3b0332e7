"""Engine-neutral job description and job state (plain dataclasses)."""

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
    #: short machine-friendly cause, e.g. "oom_killed", "image_missing"
    reason: str = ""
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

    @property
    def timestamp(self) -> datetime | None:
        """The most recent moment the job changed state."""
        return self.finished_at or self.started_at or self.created_at
