"""The tracker's background threads against the fake engine: the event
stream wakes the cycle, and stopping closes everything."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from pman import tracker as tracker_module
from pman.models import JobState
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend, FakeEvents


def wait_for(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_an_engine_event_wakes_the_tracker(
    app: object,
    client: FlaskClient,
    fake: FakeBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracker_module, "WATCHED_POLL_S", 60.0)
    service = app.extensions["pman"].service  # type: ignore[attr-defined]
    tracker = service.tracker
    tracker.interval = tracker.idle_interval = 60.0
    fake.events = FakeEvents()
    client.post("/api/v1/", json=job_body(jid="ev"))
    tracker.start()
    try:
        assert wait_for(lambda: tracker.watching), "the tracker never opened the event stream"
        # the first cycle (reconcile + unfinished) and the one the stream's opening
        # asks for are done; after them only an event makes the tracker look
        assert wait_for(lambda: fake.calls.count("list") >= 3)
        time.sleep(0.2)
        fake.set_state("ev", JobState.FAILED, exit_code=2, message="exited with code 2")
        fake.events.push("ev")
        assert wait_for(
            lambda: client.get("/api/v1/ev/").get_json()["status"] == "finishedWithError"
        ), "the event did not make the tracker look"
    finally:
        tracker.stop()
    assert not tracker.watching


def test_without_events_the_tracker_polls(
    app: object, client: FlaskClient, fake: FakeBackend
) -> None:
    service = app.extensions["pman"].service  # type: ignore[attr-defined]
    tracker = service.tracker
    tracker.interval = 0.05
    client.post("/api/v1/", json=job_body(jid="po"))
    tracker.start()
    try:
        fake.set_state("po", JobState.SUCCEEDED, exit_code=0)
        assert wait_for(
            lambda: client.get("/api/v1/po/").get_json()["status"] == "finishedSuccessfully"
        )
        assert not tracker.watching
    finally:
        tracker.stop()


def test_a_broken_event_stream_falls_back_to_polling_and_reopens(
    app: object, client: FlaskClient, fake: FakeBackend
) -> None:
    service = app.extensions["pman"].service  # type: ignore[attr-defined]
    tracker = service.tracker
    tracker.interval = 0.05
    fake.events = first = FakeEvents()
    client.post("/api/v1/", json=job_body(jid="br"))
    tracker.start()
    try:
        assert wait_for(lambda: tracker.watching)
        fake.events = second = FakeEvents()
        first.close()  # the engine dropped the stream
        assert wait_for(lambda: fake.calls.count("watch") >= 2), "never reopened"
        assert wait_for(lambda: tracker.watching)
        fake.set_state("br", JobState.SUCCEEDED, exit_code=0)
        second.push("br")
        assert wait_for(
            lambda: client.get("/api/v1/br/").get_json()["status"] == "finishedSuccessfully"
        )
    finally:
        tracker.stop()


def test_stop_ends_a_quiet_event_stream_at_once(app: object, fake: FakeBackend) -> None:
    tracker = app.extensions["pman"].service.tracker  # type: ignore[attr-defined]
    fake.events = FakeEvents()
    tracker.start()
    assert wait_for(lambda: tracker.watching)
    started = time.monotonic()
    tracker.stop()
    assert not tracker.watching
    # a stop that waited for the stream would give up after its 10 s join timeout
    assert time.monotonic() - started < 9, "stop() waited for the next engine event"
