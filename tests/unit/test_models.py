"""pman.models.Reason: every reason a client can see is a member, given as
its string; a text pman has no member for (read back with Reason.parse)
reaches clients as it is."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from pman.api.schemas import JobSummary
from pman.backends.base import Outcome
from pman.lifecycle import Reason as LifecycleReason
from pman.models import JobInfo, JobState, Reason
from pman.registry import Registry, jobs
from pman.registry.writes import column_values
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


def test_reasons_are_their_strings_on_the_wire() -> None:
    assert Reason.OOM_KILLED == "oom_killed" and "oom_killed" in {Reason.OOM_KILLED}
    assert json.dumps({"reason": Reason.CANCELLED}) == '{"reason": "cancelled"}'
    assert f"{Reason.PMAN_QUEUE}" == "pman_queue" and str(Reason.NONE) == ""
    assert Reason.parse("vanished") is Reason.VANISHED
    assert Reason.parse(None) is Reason.NONE
    # an engine's word pman has no member for is kept as it is
    assert Reason.parse("some_new_state") == "some_new_state"
    assert len({r.value for r in Reason}) == len(Reason)
    # pman.lifecycle gives out the model's Reason
    assert LifecycleReason is Reason


def test_a_text_without_a_member_is_an_unlisted_reason() -> None:
    word = Reason.parse("SomeEngineWord")
    assert isinstance(word, Reason) and not word.listed and Reason.VANISHED.listed
    assert word == "SomeEngineWord" and word.value == "SomeEngineWord"
    assert str(word) == f"{word}" == "SomeEngineWord"
    assert hash(word) == hash("SomeEngineWord") and "SomeEngineWord" in {word}
    assert json.dumps({"reason": word}) == '{"reason": "SomeEngineWord"}'
    assert word not in list(Reason), "it is no member"
    with pytest.raises(ValueError):
        Reason("SomeEngineWord")  # only parse makes one
    for again in (copy.copy(word), copy.deepcopy(word), pickle.loads(pickle.dumps(word))):
        assert isinstance(again, Reason) and again == word and not again.listed
    assert pickle.loads(pickle.dumps(Reason.OOM_KILLED)) is Reason.OOM_KILLED


@pytest.mark.parametrize("reason", [Reason.OOM_KILLED, Reason.NONE, Reason.parse("NewWord")])
def test_a_reason_leaves_pman_as_its_plain_string(reason: Reason) -> None:
    """The API's JSON and the registry's column hold the text, never the enum."""
    dumped = JobSummary.model_validate(
        {
            "jid": "j",
            "status": "finishedWithError",
            "state": "failed",
            "message": "",
            "exit_code": None,
            "reason": reason,
            "image": "",
            "cmd": "",
            "auid": "",
            "labels": {},
            "submitted_at": "",
            "started_at": None,
            "finished_at": None,
            "deleted_at": None,
        }
    ).model_dump()
    assert type(dumped["reason"]) is str and dumped["reason"] == reason.value
    stored = column_values({"reason": reason})["reason"]
    assert type(stored) is str and stored == reason.value


# ---------------------------------------------------------------- every reason has a member
def test_every_reason_a_backend_gives_is_a_reason_member() -> None:
    """A reason is a Reason by type: a JobInfo or an Outcome with a bare
    string (even a member's value) is refused when it is made, so a backend
    that gives one fails its own tests; the tables the backends read reasons
    from hold members only."""
    for bare in ("oom_killed", "", "some_new_state"):
        with pytest.raises(TypeError, match=r"must be a pman\.models\.Reason"):
            JobInfo(name="j", state=JobState.FAILED, reason=bare)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"must be a pman\.models\.Reason"):
            Outcome(JobState.FAILED, bare)  # type: ignore[arg-type]
    info = JobInfo(name="j", state=JobState.FAILED, reason=Reason.EXIT_CODE)
    with pytest.raises(TypeError):
        dataclasses.replace(info, reason="oom_killed")
    assert JobInfo(name="j", state=JobState.RUNNING).reason is Reason.NONE
    assert Outcome(JobState.RUNNING).reason is Reason.NONE

    from pman.backends.kubernetes.state import STUCK_REASONS
    from pman.backends.slurm.state import INFRASTRUCTURE_REASONS, SLURM_STATES
    from pman.backends.swarm.state import TASK_ERROR_REASONS, TASK_STATES

    tables: dict[str, dict[str, Reason]] = {
        "kubernetes STUCK_REASONS": STUCK_REASONS,
        "slurm INFRASTRUCTURE_REASONS": INFRASTRUCTURE_REASONS,
        "swarm TASK_ERROR_REASONS": TASK_ERROR_REASONS,
    }
    for table, reasons in tables.items():
        for word, reason in reasons.items():
            assert isinstance(reason, Reason) and reason.listed, (table, word, reason)
    # SLURM: a job the infrastructure could not run has its state's name as reason
    errors = {n for n, (s, _) in SLURM_STATES.items() if s is JobState.SYSTEM_ERROR}
    assert set(INFRASTRUCTURE_REASONS) == errors
    assert all(r == n.lower() for n, r in INFRASTRUCTURE_REASONS.items())
    # swarm: likewise a task's state
    assert set(TASK_ERROR_REASONS) == {
        n for n, s in TASK_STATES.items() if s is JobState.SYSTEM_ERROR
    }
    assert all(r == n for n, r in TASK_ERROR_REASONS.items())


def test_a_reason_reaches_clients_and_the_registry_as_its_text(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], Any]
) -> None:
    """A member and an unlisted reason (an engine's word): stored as their text,
    listed by the API as their text."""
    for jid in ("oom", "word"):
        assert client.post("/api/v1/", json=job_body(jid=jid)).status_code == 201
    fake.set_state("oom", JobState.FAILED, exit_code=137, reason=Reason.OOM_KILLED)
    fake.set_state("word", JobState.SYSTEM_ERROR, reason=Reason.parse("SomeEngineWord"))
    track()
    registry: Registry = client.application.extensions["pman"].service.registry
    with registry.engine.connect() as conn:
        stored = dict(conn.execute(select(jobs.c.jid, jobs.c.reason)).all())
    assert stored == {"oom": "oom_killed", "word": "SomeEngineWord"}
    assert all(type(v) is str for v in stored.values())
    word = registry.active("word")
    assert isinstance(word.reason, Reason) and not word.reason.listed
    resp = client.get("/api/v1/jobs/")
    listed = {j["jid"]: j["reason"] for j in resp.get_json()["jobs"]}
    assert listed == {"oom": "oom_killed", "word": "SomeEngineWord"}
    assert b'"reason":"SomeEngineWord"' in resp.data.replace(b" ", b"")
