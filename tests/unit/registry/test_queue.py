"""pman's capacity queue (PMAN_MAX_RUNNING): jobs beyond it wait in the
registry as notstarted and the tracker starts them in submission order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pman.app import create_app
from pman.errors import BackendUnavailable, InvalidJobSpec
from pman.models import JobInfo, JobSpec, JobState
from pman.registry import QUEUE_REASON
from pman.tracker import CycleReport
from tests.helpers import job_body
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend


@pytest.fixture
def app(storebase: Path, tmp_path: Path, fake: FakeBackend) -> Flask:
    return create_app(
        settings=make_settings(storebase, tmp_path, PMAN_MAX_RUNNING="2", JOB_LABELS="site=t"),
        backend=fake,
    )


def post(client: FlaskClient, jid: str, **overrides: Any) -> Any:
    return client.post("/api/v1/", json=job_body(jid=jid, **overrides))


def status(client: FlaskClient, jid: str) -> dict[str, Any]:
    resp = client.get(f"/api/v1/{jid}/")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def finish(fake: FakeBackend, jid: str) -> None:
    fake.set_state(jid, JobState.SUCCEEDED, exit_code=0, message="exited with code 0")


def test_jobs_beyond_capacity_wait_and_start_in_order(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], CycleReport]
) -> None:
    for jid in ("a", "b", "c", "d", "e"):
        assert post(client, jid).status_code == 201
    assert [c for c in fake.calls if c == "submit"] == ["submit"] * 2
    assert set(fake.jobs) == {"a", "b"}
    c, e = status(client, "c"), status(client, "e")
    assert (c["status"], e["status"]) == ("notstarted", "notstarted")
    assert c["message"].startswith("queued by pman: 0 jobs ahead")
    assert e["message"].startswith("queued by pman: 2 jobs ahead")
    assert "PMAN_MAX_RUNNING" in c["message"]
    assert c["cmd"] and c["image"], "a queued job's body is complete"

    track()
    assert set(fake.jobs) == {"a", "b"}, "still at capacity"
    finish(fake, "b")
    report = track()
    assert report.started == 1
    assert set(fake.jobs) == {"a", "b", "c"}
    assert status(client, "b")["status"] == "finishedSuccessfully"
    assert status(client, "c")["status"] == "started"
    assert status(client, "e")["message"].startswith("queued by pman: 1 job ahead")
    finish(fake, "a")
    finish(fake, "c")
    track()
    assert set(fake.jobs) == {"a", "b", "c", "d", "e"}
    started = [name for name in fake.specs]
    assert started == ["a", "b", "c", "d", "e"], "submission order"
    # the job that waited is the job that was asked for
    assert fake.specs["d"].labels["site"] == "t"
    assert fake.specs["d"].command[-1] == "/share/outgoing"
    assert fake.specs["d"].mounts.output_host is not None
    assert fake.specs["d"].mounts.output_host.is_dir(), "its output folder made at start"
    events = client.get("/api/v1/d/events/").get_json()["events"]
    assert [e["state"] for e in events] == ["queued", "queued", "running"]
    assert events[1]["message"] == "leaving pman's queue: submitting"


def test_retry_and_delete_of_a_queued_job(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], CycleReport]
) -> None:
    for jid in ("a", "b", "q1", "q2"):
        assert post(client, jid).status_code == 201
    again = post(client, "q1")
    assert again.status_code == 200, "same body again: the queued job"
    assert again.get_json()["status"] == "notstarted"
    assert post(client, "q1", args=["other"]).status_code == 409
    fake.calls.clear()
    assert client.delete("/api/v1/q1/").status_code == 204
    assert fake.calls == [], "a queued job is not on the engine: nothing to ask it"
    assert client.get("/api/v1/q1/").status_code == 404
    events = client.get("/api/v1/q1/events/").get_json()["events"]
    assert events[-1]["state"] == "cancelled"
    finish(fake, "a")
    track()
    assert "q1" not in fake.jobs and "q2" in fake.jobs
    # the jid of a deleted queued job is free again
    assert post(client, "q1").status_code == 201


def test_an_engine_error_at_start_ends_the_job_with_its_message(
    client: FlaskClient,
    fake: FakeBackend,
    track: Callable[[], CycleReport],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for jid in ("a", "b", "bad", "good"):
        assert post(client, jid).status_code == 201
    real_submit = fake.submit

    def submit(spec: JobSpec) -> JobInfo:
        if spec.name == "bad":
            raise InvalidJobSpec("image 'x' is not on the engine and could not be pulled")
        return real_submit(spec)

    monkeypatch.setattr(fake, "submit", submit)
    finish(fake, "a")
    finish(fake, "b")
    track()
    bad = status(client, "bad")
    assert bad["status"] == "finishedWithError"
    assert "could not start it from pman's queue" in bad["message"]
    assert "could not be pulled" in bad["message"]
    assert status(client, "good")["status"] == "started", "the next one starts in its place"
    track()
    assert status(client, "bad")["status"] == "finishedWithError", "never retried"


def test_an_unreachable_engine_keeps_the_job_in_its_place(
    client: FlaskClient,
    fake: FakeBackend,
    track: Callable[[], CycleReport],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for jid in ("a", "b", "q1", "q2"):
        assert post(client, jid).status_code == 201
    real_submit = fake.submit
    down = [True]

    def submit(spec: JobSpec) -> JobInfo:
        if down[0]:
            raise BackendUnavailable("engine down")
        return real_submit(spec)

    monkeypatch.setattr(fake, "submit", submit)
    finish(fake, "a")
    with pytest.raises(BackendUnavailable):
        track()
    q1 = status(client, "q1")
    assert q1["status"] == "notstarted" and "waiting for the engine" in q1["message"]
    down[0] = False
    track()
    assert status(client, "q1")["status"] == "started"
    assert status(client, "q2")["status"] == "notstarted"


def test_the_queue_survives_a_restart(
    storebase: Path, tmp_path: Path, fake: FakeBackend, client: FlaskClient
) -> None:
    for jid in ("a", "b", "waits"):
        assert post(client, jid).status_code == 201
    finish(fake, "a")
    # a new pman on the same registry (the first one never tracked again)
    settings = make_settings(storebase, tmp_path, PMAN_MAX_RUNNING="2")
    second = create_app(settings=settings, backend=fake)
    second.extensions["pman"].service.tracker.run_once()
    assert "waits" in fake.jobs
    assert second.test_client().get("/api/v1/waits/").get_json()["status"] == "started"


def test_without_a_limit_nothing_waits(storebase: Path, tmp_path: Path, fake: FakeBackend) -> None:
    app = create_app(settings=make_settings(storebase, tmp_path), backend=fake)
    client = app.test_client()
    for i in range(5):
        assert post(client, f"j{i}").status_code == 201
    assert len(fake.jobs) == 5
    registry = app.extensions["pman"].service.registry
    assert all(r.reason != QUEUE_REASON for r in registry.unfinished())


def test_a_queue_left_by_a_pman_with_a_limit_starts_without_one(
    storebase: Path, tmp_path: Path, fake: FakeBackend, client: FlaskClient
) -> None:
    for jid in ("a", "b", "w1", "w2"):
        assert post(client, jid).status_code == 201
    unlimited = create_app(settings=make_settings(storebase, tmp_path), backend=fake)
    assert unlimited.extensions["pman"].service.tracker.run_once().started == 2
    assert {"w1", "w2"} <= set(fake.jobs)
