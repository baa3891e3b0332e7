"""A job's lifecycle: where it is (its phase), why it is in its state (its
reason), and the one function that decides what a report does to it.

The registry keeps three things apart that used to share two columns:

- ``state`` (JobState): what clients see as the job's status;
- ``phase`` (Phase): where pman has got with the job (accepted, waiting in
  pman's own queue, on the engine, cancelled for good, withdrawn, deleted):
  control state that only pman reads;
- ``reason`` (Reason): why the job is in its state, as clients see it
  (defined with the model, pman.models.Reason, which JobInfo holds; this
  module gives it out too).

``transition(current, report)`` holds every rule of how a record moves: what
state, reason and message a report (from the engine, a user's cancel or
delete, pman's queue) gives it, when a report is ignored, and which changes
make an event (and so a webhook). It is pure: no database, no clock, no I/O;
the registry reads the record, asks ``transition`` and writes what it
decided only if the record is still what it read (compare and set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from pman.models import JobInfo, JobState, Reason


def utcnow() -> datetime:
    return datetime.now(UTC)


class Phase(StrEnum):
    """Where pman has got with a job (the registry's ``phase`` column)."""

    #: recorded; its submission to the engine is under way (its message says
    #: "submitting"): the engine may not have it yet
    ACCEPTED = "accepted"
    #: waiting in pman's own queue (PMAN_MAX_RUNNING): not on the engine yet
    QUEUED = "queued"
    #: the engine has it (or had it, if it has finished)
    ON_ENGINE = "on_engine"
    #: a user cancelled it: final, whatever the engine reports later
    CANCELLED = "cancelled"
    #: its POST was answered 503 while the engine might still act on it: kept
    #: only so that its jid stays taken until the tracker has removed whatever
    #: the engine made of it; then the record is forgotten. No client sees it.
    WITHDRAWN = "withdrawn"
    #: deleted: the record is history (``active`` is false)
    DELETED = "deleted"
    #: reserved: its input is being staged before it is submitted
    STAGING = "staging"
    #: reserved: a workflow step waiting for the steps it depends on
    WAITING = "waiting"
    #: reserved: a workflow step that will not run
    SKIPPED = "skipped"


#: the message of an accepted job whose submission is under way (clients see it)
SUBMITTING = "submitting"


def queue_message(ahead: int, max_running: int) -> str:
    """What a job waiting in pman's queue says about its place."""
    jobs_ahead = f"{ahead} job{'s' if ahead != 1 else ''} ahead"
    return f"queued by pman: {jobs_ahead}; at most {max_running} run at once (PMAN_MAX_RUNNING)"


def admission(waiting: int | None, max_running: int) -> dict[str, Any]:
    """A new job's first values: about to be submitted (``waiting`` None), or
    put in pman's queue behind ``waiting`` others."""
    if waiting is None:
        return {
            "state": JobState.QUEUED,
            "phase": Phase.ACCEPTED,
            "reason": Reason.NONE,
            "message": SUBMITTING,
        }
    return {
        "state": JobState.QUEUED,
        "phase": Phase.QUEUED,
        "reason": Reason.PMAN_QUEUE,
        "message": queue_message(waiting, max_running),
    }


# ---------------------------------------------------------------- records and reports
@dataclass(frozen=True)
class Current:
    """What ``transition`` needs of a record as it is now."""

    state: JobState
    phase: Phase
    reason: Reason = Reason.NONE
    message: str = ""
    exit_code: int | None = None
    active: bool = True
    updated_at: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    finished_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class _Report:
    #: when the report was made: the moment written as updated_at (and
    #: finished_at, deleted_at) if it changes the record
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, kw_only=True)
class EngineReport(_Report):
    """What the engine says of the job, with its latest logs if read."""

    info: JobInfo
    logs: str | None = None


@dataclass(frozen=True, kw_only=True)
class Missing(_Report):
    """The engine has no such job, and the job is past its submission's grace."""


@dataclass(frozen=True, kw_only=True)
class StartFailed(_Report):
    """A job taken from pman's queue could not be submitted (not for want of the engine)."""

    message: str


@dataclass(frozen=True, kw_only=True)
class UserCancel(_Report):
    """A user asked at ``asked_at`` to cancel the job; ``logs`` as the job ended."""

    asked_at: datetime
    logs: str | None = None


@dataclass(frozen=True, kw_only=True)
class Deleted(_Report):
    """The job was removed from the engine (DELETE /api/v1/<jid>/)."""


@dataclass(frozen=True, kw_only=True)
class Dequeued(_Report):
    """DELETE of a job still waiting in pman's queue: it never reached the engine."""


@dataclass(frozen=True, kw_only=True)
class Claimed(_Report):
    """The job leaves pman's queue to be submitted now."""


@dataclass(frozen=True, kw_only=True)
class Unclaimed(_Report):
    """A job taken from the queue goes back in its place: the engine could not be reached."""

    why: str


@dataclass(frozen=True, kw_only=True)
class Withdrawn(_Report):
    """Its POST was answered 503 while the engine might still act on it."""

    message: str


Report = (
    EngineReport
    | Missing
    | StartFailed
    | UserCancel
    | Deleted
    | Dequeued
    | Claimed
    | Unclaimed
    | Withdrawn
)


@dataclass(frozen=True)
class Emit:
    """An event of the job's history; ``webhook``: sent to its webhooks too."""

    state: JobState
    message: str
    exit_code: int | None = None
    webhook: bool = True


@dataclass(frozen=True)
class Decision:
    """What a report does to a record: the values to write (by column; none:
    the report is ignored) and the event it makes, if any."""

    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    event: Emit | None = None

    @property
    def ignored(self) -> bool:
        return not self.values

    @property
    def changed(self) -> bool:
        """The job's history moved (an event): what callers report as a change."""
        return self.event is not None


IGNORE = Decision()


# ---------------------------------------------------------------- the rules
def transition(current: Current, report: Report) -> Decision:
    """What ``report`` does to a record that is ``current``."""
    match report:
        case EngineReport():
            return _engine(current, report.info, report.logs, report.at, Phase.ON_ENGINE)
        case Missing():
            return _missing(current, report)
        case StartFailed():
            failed = JobInfo(
                name="",
                state=JobState.SYSTEM_ERROR,
                reason=Reason.START_FAILED,
                message=f"could not start it from pman's queue: {report.message}",
            )
            # it never reached the engine: it stays where it got
            return _engine(current, failed, None, report.at, current.phase)
        case UserCancel():
            return _cancel(current, report)
        case Deleted():
            return _delete(current, report)
        case Dequeued():
            return _dequeue(current, report)
        case Claimed():
            return _claim(current, report)
        case Unclaimed():
            return _unclaim(current, report)
        case Withdrawn():
            return _withdraw(current, report)
    raise TypeError(f"not a report: {report!r}")  # pragma: no cover


def _engine(c: Current, info: JobInfo, logs: str | None, at: datetime, phase: Phase) -> Decision:
    """The engine's view of the job (or pman's, for a job that never got there)."""
    if c.phase in (Phase.DELETED, Phase.WITHDRAWN):
        return IGNORE  # history, or no job: nothing the engine says changes it
    if c.phase is Phase.CANCELLED:
        # a user's cancel is final: the engine only reports the kill; its final
        # logs are still worth keeping
        return Decision({"logs": logs}) if logs is not None else IGNORE
    if c.state.finished and info.state is not c.state:
        return IGNORE  # finished is final
    values: dict[str, Any] = {
        "state": info.state,
        "exit_code": info.exit_code,
        "reason": info.reason,
        "message": info.message,
        "phase": phase,
        "updated_at": at,
    }
    if info.started_at is not None:
        values["started_at"] = info.started_at
    if info.native_id is not None:
        values["native_id"] = info.native_id
    if info.finished_at is not None or info.state.finished:
        values["finished_at"] = info.finished_at or at
    if logs is not None:
        values["logs"] = logs
    event = None
    if info.state is not c.state:
        event = Emit(info.state, info.message, info.exit_code)
    return Decision(values, event)


def _missing(c: Current, report: Missing) -> Decision:
    if c.phase is Phase.ACCEPTED:
        info = JobInfo(
            name="",
            state=JobState.SYSTEM_ERROR,
            reason=Reason.NEVER_SUBMITTED,
            message="pman stopped before the job reached the engine",
        )
        return _engine(c, info, None, report.at, Phase.ACCEPTED)
    info = JobInfo(
        name="",
        state=JobState.SYSTEM_ERROR,
        reason=Reason.VANISHED,
        message="the job disappeared from the engine (removed outside pman?)",
    )
    return _engine(c, info, None, report.at, Phase.ON_ENGINE)


def _cancel(c: Current, report: UserCancel) -> Decision:
    if c.phase in (Phase.CANCELLED, Phase.DELETED, Phase.WITHDRAWN):
        return IGNORE
    if c.state is JobState.CANCELLED and c.reason == Reason.CANCELLED:
        # the engine has reported the cancel already (the local backend's
        # cancelled.json): it is final from now on, with nothing new to say
        return Decision({"phase": Phase.CANCELLED})
    if c.state.finished and c.updated_at < report.asked_at:
        return IGNORE  # it ended before the cancel was asked for: its outcome stands
    values: dict[str, Any] = {
        "state": JobState.CANCELLED,
        "phase": Phase.CANCELLED,
        "reason": Reason.CANCELLED,
        "message": "cancelled",
        "updated_at": report.at,
        # recorded as finished since the cancel was asked (the engine killed
        # it): cancelled all the same, at the time it ended
        "finished_at": c.finished_at if c.state.finished else report.at,
    }
    if report.logs is not None:
        values["logs"] = report.logs
    return Decision(values, Emit(JobState.CANCELLED, "cancelled", None))


def _delete(c: Current, report: Deleted) -> Decision:
    if c.phase is Phase.DELETED or not c.active:
        return IGNORE
    values: dict[str, Any] = {
        "active": False,
        "phase": Phase.DELETED,
        "deleted_at": report.at,
        "updated_at": report.at,
    }
    state = c.state
    if not c.state.finished:
        state = JobState.CANCELLED
        values.update(
            state=state,
            reason=Reason.DELETED,
            message="deleted while it ran",
            finished_at=report.at,
        )
    return Decision(values, Emit(state, "deleted", c.exit_code))


def _waiting(c: Current) -> bool:
    return c.active and c.phase is Phase.QUEUED and c.state is JobState.QUEUED


def _dequeue(c: Current, report: Dequeued) -> Decision:
    if not _waiting(c):
        return IGNORE  # it has left the queue meanwhile
    values = {
        "active": False,
        "phase": Phase.DELETED,
        "deleted_at": report.at,
        "updated_at": report.at,
        "state": JobState.CANCELLED,
        "reason": Reason.DELETED,
        "message": "deleted while it waited in pman's queue",
        "finished_at": report.at,
    }
    return Decision(values, Emit(JobState.CANCELLED, "deleted", None))


def _claim(c: Current, report: Claimed) -> Decision:
    if not _waiting(c):
        return IGNORE
    values = {
        "phase": Phase.ACCEPTED,
        "reason": Reason.NONE,
        "message": SUBMITTING,
        "updated_at": report.at,
    }
    # history only: a webhook says nothing a client can act on (still notstarted)
    return Decision(
        values, Emit(JobState.QUEUED, f"leaving pman's queue: {SUBMITTING}", webhook=False)
    )


def _unclaim(c: Current, report: Unclaimed) -> Decision:
    if not (c.active and c.phase is Phase.ACCEPTED and c.state is JobState.QUEUED):
        return IGNORE
    values = {
        "phase": Phase.QUEUED,
        "reason": Reason.PMAN_QUEUE,
        "message": f"queued by pman: {report.why}",
        "updated_at": report.at,
    }
    return Decision(values)


def _withdraw(c: Current, report: Withdrawn) -> Decision:
    if not c.active:
        return IGNORE
    values = {
        "phase": Phase.WITHDRAWN,
        "reason": Reason.PMAN_WITHDRAW,
        "message": report.message,
        "updated_at": report.at,
    }
    return Decision(values)
