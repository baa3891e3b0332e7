"""pman.lifecycle.transition: every rule of how a job's record moves, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pman.lifecycle import (
    IGNORE,
    SUBMITTING,
    Claimed,
    Current,
    Decision,
    Deleted,
    Dequeued,
    Emit,
    EngineReport,
    Missing,
    Phase,
    Reason,
    Report,
    StartFailed,
    Unclaimed,
    UserCancel,
    Withdrawn,
    admission,
    queue_message,
    transition,
)
from pman.models import JobInfo, JobState

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
AT = T0 + timedelta(minutes=5)
BEFORE, AFTER = AT - timedelta(minutes=1), AT + timedelta(minutes=1)
Q, RUN, OK, FAIL = JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED
ERR, CANC = JobState.SYSTEM_ERROR, JobState.CANCELLED


def cur(state: JobState = RUN, phase: Phase = Phase.ON_ENGINE, **kw: Any) -> Current:
    return Current(state=state, phase=phase, updated_at=kw.pop("updated_at", T0), **kw)


def engine(state: JobState, logs: str | None = None, **kw: Any) -> EngineReport:
    return EngineReport(info=JobInfo(name="j", state=state, **kw), logs=logs, at=AT)


def moved(state: JobState, reason: str, message: str, **more: Any) -> dict[str, Any]:
    """The values an engine's report writes."""
    return {
        "state": state,
        "exit_code": more.pop("exit_code", None),
        "reason": reason,
        "message": message,
        "phase": more.pop("phase", Phase.ON_ENGINE),
        "updated_at": AT,
        **more,
    }


CANCELLED = {
    "state": CANC,
    "phase": Phase.CANCELLED,
    "reason": Reason.CANCELLED,
    "message": "cancelled",
    "updated_at": AT,
}

# (current, report, values written (None: ignored), event)
CASES: dict[str, tuple[Current, Report, dict[str, Any] | None, Emit | None]] = {
    # ---- what the engine says
    "submitted job seen running": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        engine(RUN, message="running", native_id="c0ffee", started_at=T0),
        moved(RUN, "", "running", native_id="c0ffee", started_at=T0),
        Emit(RUN, "running"),
    ),
    "same state again: written, no event": (
        cur(RUN),
        engine(RUN, message="still running"),
        moved(RUN, "", "still running"),
        None,
    ),
    "it ends: finished now, with its logs": (
        cur(RUN),
        engine(
            FAIL, exit_code=3, reason=Reason.EXIT_CODE, message="exited with code 3", logs="boom"
        ),
        moved(FAIL, "exit_code", "exited with code 3", exit_code=3, finished_at=AT, logs="boom"),
        Emit(FAIL, "exited with code 3", 3),
    ),
    "it ends when the engine says it did": (
        cur(RUN),
        engine(OK, exit_code=0, message="exited with code 0", finished_at=T0),
        moved(OK, "", "exited with code 0", exit_code=0, finished_at=T0),
        Emit(OK, "exited with code 0", 0),
    ),
    "finished is final": (cur(FAIL), engine(RUN), None, None),
    "a finished job's details may still be told": (
        cur(FAIL, exit_code=137),
        engine(FAIL, exit_code=137, reason=Reason.OOM_KILLED, message="killed: out of memory"),
        moved(FAIL, "oom_killed", "killed: out of memory", exit_code=137, finished_at=AT),
        None,
    ),
    "a user's cancel is final: the kill's report only brings logs": (
        cur(CANC, Phase.CANCELLED, reason=Reason.CANCELLED),
        engine(FAIL, exit_code=137, logs="last line"),
        {"logs": "last line"},
        None,
    ),
    "a user's cancel is final: without logs nothing": (
        cur(CANC, Phase.CANCELLED, reason=Reason.CANCELLED),
        engine(FAIL, exit_code=137),
        None,
        None,
    ),
    "a deleted job's record is history": (
        cur(CANC, Phase.DELETED, active=False),
        engine(CANC, reason=Reason.SUSPENDED),
        None,
        None,
    ),
    "a withdrawn submission is no job": (
        cur(Q, Phase.WITHDRAWN, reason=Reason.PMAN_WITHDRAW),
        engine(RUN),
        None,
        None,
    ),
    # ---- the engine has no such job (past the submission's grace)
    "never reached the engine": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        Missing(at=AT),
        moved(
            ERR,
            "never_submitted",
            "pman stopped before the job reached the engine",
            phase=Phase.ACCEPTED,
            finished_at=AT,
        ),
        Emit(ERR, "pman stopped before the job reached the engine"),
    ),
    "vanished from the engine": (
        cur(RUN),
        Missing(at=AT),
        moved(
            ERR,
            "vanished",
            "the job disappeared from the engine (removed outside pman?)",
            finished_at=AT,
        ),
        Emit(ERR, "the job disappeared from the engine (removed outside pman?)"),
    ),
    "a cancelled job that is gone stays cancelled": (
        cur(CANC, Phase.CANCELLED, reason=Reason.CANCELLED),
        Missing(at=AT),
        None,
        None,
    ),
    # ---- a job taken from pman's queue could not be started
    "start failed": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        StartFailed(message="no such image", at=AT),
        moved(
            ERR,
            "start_failed",
            "could not start it from pman's queue: no such image",
            phase=Phase.ACCEPTED,
            finished_at=AT,
        ),
        Emit(ERR, "could not start it from pman's queue: no such image"),
    ),
    # ---- a user's cancel
    "cancel a running job": (
        cur(RUN),
        UserCancel(asked_at=AT, logs="bye", at=AT),
        {**CANCELLED, "finished_at": AT, "logs": "bye"},
        Emit(CANC, "cancelled", None),
    ),
    "cancel a job the engine was seen to kill since": (
        cur(FAIL, exit_code=137, updated_at=AFTER, finished_at=AFTER),
        UserCancel(asked_at=AT, at=AT),
        {**CANCELLED, "finished_at": AFTER},
        Emit(CANC, "cancelled", None),
    ),
    "a job that ended before the cancel keeps its outcome": (
        cur(OK, updated_at=BEFORE, finished_at=BEFORE),
        UserCancel(asked_at=AT, at=AT),
        None,
        None,
    ),
    "cancelled once": (
        cur(CANC, Phase.CANCELLED, reason=Reason.CANCELLED, updated_at=AFTER),
        UserCancel(asked_at=AT, at=AT),
        None,
        None,
    ),
    "the engine told the cancel first: final, nothing new to tell": (
        cur(CANC, reason=Reason.CANCELLED, message="cancelled", updated_at=AFTER),
        UserCancel(asked_at=AT, at=AT),
        {"phase": Phase.CANCELLED},
        None,
    ),
    "cancel a job waiting in pman's queue": (
        cur(Q, Phase.QUEUED, reason=Reason.PMAN_QUEUE),
        UserCancel(asked_at=AT, at=AT),
        {**CANCELLED, "finished_at": AT},
        Emit(CANC, "cancelled", None),
    ),
    "a deleted job is not cancelled": (
        cur(CANC, Phase.DELETED, reason=Reason.DELETED, active=False, updated_at=AFTER),
        UserCancel(asked_at=AT, at=AT),
        None,
        None,
    ),
    # ---- DELETE
    "delete a running job": (
        cur(RUN, exit_code=None),
        Deleted(at=AT),
        {
            "active": False,
            "phase": Phase.DELETED,
            "deleted_at": AT,
            "updated_at": AT,
            "state": CANC,
            "reason": Reason.DELETED,
            "message": "deleted while it ran",
            "finished_at": AT,
        },
        Emit(CANC, "deleted", None),
    ),
    "delete a finished job: its outcome stays": (
        cur(FAIL, exit_code=2),
        Deleted(at=AT),
        {"active": False, "phase": Phase.DELETED, "deleted_at": AT, "updated_at": AT},
        Emit(FAIL, "deleted", 2),
    ),
    "deleted once": (cur(CANC, Phase.DELETED, active=False), Deleted(at=AT), None, None),
    # ---- pman's queue
    "delete a job waiting in pman's queue": (
        cur(Q, Phase.QUEUED, reason=Reason.PMAN_QUEUE),
        Dequeued(at=AT),
        {
            "active": False,
            "phase": Phase.DELETED,
            "deleted_at": AT,
            "updated_at": AT,
            "state": CANC,
            "reason": Reason.DELETED,
            "message": "deleted while it waited in pman's queue",
            "finished_at": AT,
        },
        Emit(CANC, "deleted", None),
    ),
    "a job that left the queue is not dequeued": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        Dequeued(at=AT),
        None,
        None,
    ),
    "claim: it leaves the queue to be submitted": (
        cur(Q, Phase.QUEUED, reason=Reason.PMAN_QUEUE, message=queue_message(0, 2)),
        Claimed(at=AT),
        {"phase": Phase.ACCEPTED, "reason": "", "message": SUBMITTING, "updated_at": AT},
        Emit(Q, "leaving pman's queue: submitting", webhook=False),
    ),
    "a claimed job is not claimed again": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        Claimed(at=AT),
        None,
        None,
    ),
    "a cancelled job is not claimed": (
        cur(CANC, Phase.CANCELLED, reason=Reason.CANCELLED),
        Claimed(at=AT),
        None,
        None,
    ),
    "unclaim: back in its place": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        Unclaimed(why="waiting for the engine", at=AT),
        {
            "phase": Phase.QUEUED,
            "reason": Reason.PMAN_QUEUE,
            "message": "queued by pman: waiting for the engine",
            "updated_at": AT,
        },
        None,
    ),
    "a job cancelled meanwhile is not put back": (
        cur(CANC, Phase.CANCELLED, reason=Reason.CANCELLED),
        Unclaimed(why="waiting for the engine", at=AT),
        None,
        None,
    ),
    # ---- a POST answered 503
    "withdraw a submission": (
        cur(Q, Phase.ACCEPTED, message=SUBMITTING),
        Withdrawn(message="withdrawn: the engine timed out", at=AT),
        {
            "phase": Phase.WITHDRAWN,
            "reason": Reason.PMAN_WITHDRAW,
            "message": "withdrawn: the engine timed out",
            "updated_at": AT,
        },
        None,
    ),
    "a deleted record is not withdrawn": (
        cur(CANC, Phase.DELETED, active=False),
        Withdrawn(message="withdrawn", at=AT),
        None,
        None,
    ),
}


@pytest.mark.parametrize(("current", "report", "values", "event"), CASES.values(), ids=CASES)
def test_transition(
    current: Current, report: Report, values: dict[str, Any] | None, event: Emit | None
) -> None:
    decision = transition(current, report)
    if values is None:
        assert decision.ignored and decision == IGNORE
    else:
        assert dict(decision.values) == values
    assert decision.event == event
    assert decision.changed is (event is not None)


def test_transition_is_pure() -> None:
    current, report = cur(RUN), engine(OK, exit_code=0)
    assert transition(current, report) == transition(current, report)
    assert current == cur(RUN), "the current record is not changed in place"


def test_every_phase_is_handled_by_every_report() -> None:
    """No (phase, state, report) raises: the reserved phases included."""
    reports: list[Report] = [
        engine(RUN),
        engine(OK, exit_code=0),
        Missing(at=AT),
        StartFailed(message="x", at=AT),
        UserCancel(asked_at=AT, at=AT),
        Deleted(at=AT),
        Dequeued(at=AT),
        Claimed(at=AT),
        Unclaimed(why="x", at=AT),
        Withdrawn(message="x", at=AT),
    ]
    for phase in Phase:
        for state in JobState:
            for report in reports:
                assert isinstance(transition(cur(state, phase), report), Decision)


def test_admission() -> None:
    assert admission(None, 0) == {
        "state": Q,
        "phase": Phase.ACCEPTED,
        "reason": "",
        "message": "submitting",
    }
    assert admission(2, 3) == {
        "state": Q,
        "phase": Phase.QUEUED,
        "reason": "pman_queue",
        "message": "queued by pman: 2 jobs ahead; at most 3 run at once (PMAN_MAX_RUNNING)",
    }
    assert queue_message(1, 1).startswith("queued by pman: 1 job ahead;")
