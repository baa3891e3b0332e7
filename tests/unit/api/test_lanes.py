"""The kinds of work kept apart (pman.api.lanes), the request deadline
(pman.deadlines), abortable log streams, and what pman does with a POST it
answered 503 while the engine may still act on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from pman.api.lanes import Lane, StreamLimiter, client_key, lane_of
from pman.backends.kit.files import read_file_chunks
from pman.backends.kit.streams import LogStream
from pman.deadlines import Deadline
from pman.errors import BackendUnavailable
from pman.models import JobInfo, JobRequest, JobSpec
from pman.tracker import CycleReport
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


@pytest.mark.parametrize(
    ("method", "path", "lane"),
    [
        ("GET", "/api/v1/job-1/", Lane.QUICK),
        ("GET", "/api/v1/job-1", Lane.QUICK),
        ("GET", "/api/v1/jobs/", Lane.QUICK),
        ("GET", "/api/v1/job-1/events/", Lane.QUICK),
        ("GET", "/health", Lane.QUICK),
        ("GET", "/metrics", Lane.QUICK),
        ("POST", "/api/v1/auth-token/", Lane.QUICK),
        ("POST", "/api/v1/", Lane.ENGINE),
        ("POST", "/api/v1", Lane.QUICK),  # not a route: the application answers it
        ("DELETE", "/api/v1/job-1/", Lane.ENGINE),
        ("POST", "/api/v1/job-1/cancel/", Lane.ENGINE),
        ("GET", "/api/v1/job-1/logs/", Lane.STREAM),
        ("GET", "/api/v1/job-1/logs", Lane.STREAM),
        ("GET", "/nowhere", Lane.QUICK),
    ],
)
def test_lane_of_a_request(method: str, path: str, lane: Lane) -> None:
    assert lane_of(method, path) is lane


def test_a_client_is_its_token_or_else_its_address() -> None:
    a, b = client_key("Bearer aaa", "10.0.0.1"), client_key("Bearer bbb", "10.0.0.1")
    assert a != b and a == client_key("Bearer aaa", "10.0.0.2")
    assert "aaa" not in a  # the token itself is not kept
    assert client_key(None, "10.0.0.1") != client_key(None, "10.0.0.2")


def test_streams_are_capped_per_process_and_per_client() -> None:
    limiter = StreamLimiter(max_streams=3, max_per_client=2, idle_timeout=60)
    first, second = limiter.open("a"), limiter.open("a")
    assert isinstance(first, int) and isinstance(second, int)
    refused = limiter.open("a")
    assert isinstance(refused, str) and "PER_CLIENT" in refused
    third = limiter.open("b")
    assert isinstance(third, int)
    full = limiter.open("c")
    assert isinstance(full, str) and "PMAN_MAX_LOG_STREAMS)" in full
    limiter.close(first)
    limiter.close(first)  # twice is harmless
    assert isinstance(limiter.open("a"), int)
    assert limiter.open_count == 3


def test_an_idle_stream_is_aborted_and_an_active_one_is_not() -> None:
    limiter = StreamLimiter(max_streams=4, max_per_client=4, idle_timeout=0.4)
    idle_done, busy_done = threading.Event(), threading.Event()
    idle, busy = limiter.open("a"), limiter.open("a")
    assert isinstance(idle, int) and isinstance(busy, int)
    limiter.attach(idle, idle_done.set)
    limiter.attach(busy, busy_done.set)
    deadline = time.monotonic() + 30
    while not idle_done.is_set():
        limiter.touch(busy)
        assert time.monotonic() < deadline, "the idle stream was never ended"
        time.sleep(0.05)
    assert not busy_done.is_set()
    limiter.abort_all()
    assert busy_done.is_set()


def test_a_deadline_is_decided_once() -> None:
    late = Deadline(time.monotonic() - 1)
    assert late.commit() is False  # past due: the service must undo
    assert late.abandon() is True
    on_time = Deadline(time.monotonic() + 60)
    assert on_time.commit() is True
    assert on_time.abandon() is False  # the answer is on its way
    given_up = Deadline(time.monotonic() + 60)
    assert given_up.abandon() is True
    assert given_up.commit() is False


def test_an_aborted_log_stream_ends_however_its_read_was_broken(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"one\n"
        raise OSError("socket shut down")

    stream = LogStream(broken())
    assert next(stream) == b"one\n"
    stream.abort()
    assert list(stream) == []
    # a failure that is not an abort is still one
    with pytest.raises(OSError):
        list(LogStream(broken()))


def test_a_followed_file_stops_when_aborted(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"a\n")
    stop = threading.Event()
    stream = LogStream(read_file_chunks(path, None, lambda: False, poll=0.05, stop=stop), stop.set)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(stream))
    reader.start()
    stream.abort()
    reader.join(timeout=30)
    assert not reader.is_alive() and b"".join(got) in (b"", b"a\n")


# ---- a POST answered 503 leaves nothing behind -------------------------------


def _timing_out(fake: FakeBackend) -> Callable[[JobSpec], JobInfo]:
    """A submit that makes the job on the engine, then times out (as an engine
    that carried out the call after its client gave up)."""
    real = fake.submit

    def submit(spec: JobSpec) -> JobInfo:
        real(spec)
        raise BackendUnavailable("the engine did not answer within 30 s")

    return submit


def test_a_submit_that_timed_out_is_withdrawn_from_the_engine(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], CycleReport]
) -> None:
    fake.submit = _timing_out(fake)  # type: ignore[method-assign]
    body = job_body(jid="late-1")
    resp = client.post("/api/v1/", json=body)
    assert resp.status_code == 503
    assert "late-1" in fake.jobs  # the engine made it all the same
    # no job for the client: not polled, not listed; the jid is kept meanwhile
    assert client.get("/api/v1/late-1/").status_code == 404
    assert client.get("/api/v1/jobs/").get_json()["jobs"] == []
    again = client.post("/api/v1/", json=body)
    assert again.status_code == 503 and "withdrawn" in again.get_json()["message"]
    # the tracker deletes what the engine made, twice (2 s apart), then forgets it
    reports = [track()]
    assert "late-1" not in fake.jobs and reports[-1].withdrawn == 0
    fake.jobs.clear()
    tracker = client.application.extensions["pman"].service.tracker
    tracker._last_withdraw = 0.0  # the next withdrawal pass is due now
    reports.append(track())
    assert reports[-1].withdrawn == 1
    assert fake.deleted.count("late-1") == 2
    # the same POST now runs the job
    del fake.submit
    assert client.post("/api/v1/", json=body).status_code == 201
    assert client.get("/api/v1/late-1/").get_json()["status"] == "started"


def test_a_job_made_after_its_deadline_is_removed_at_once(
    client: FlaskClient, fake: FakeBackend
) -> None:
    service = client.application.extensions["pman"].service
    body = job_body(jid="slow-1")
    request = JobRequest(**body)
    with pytest.raises(BackendUnavailable, match="within"):
        service.submit(request, deadline=Deadline(time.monotonic() - 0.001))
    assert fake.deleted == ["slow-1"] and "slow-1" not in fake.jobs
    assert client.get("/api/v1/slow-1/").status_code == 404
    # nothing is kept: the same POST runs it
    assert client.post("/api/v1/", json=body).status_code == 201


def test_health_waits_for_no_engine_that_hangs(client: FlaskClient, fake: FakeBackend) -> None:
    release = threading.Event()
    pings: list[float] = []

    def ping() -> None:
        pings.append(time.monotonic())
        release.wait(30)

    fake.ping = ping  # type: ignore[method-assign]
    service = client.application.extensions["pman"].service
    try:
        answers = [service.health(wait=0.2) for _ in range(5)]
        assert all(a is not None and "did not answer" in a for a in answers)
        assert len(pings) == 1  # one check at a time reaches the engine
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while service.health(wait=1) is not None:
        assert time.monotonic() < deadline
    assert client.get("/health").status_code == 200


def test_a_stream_ended_before_its_engine_side_is_attached_ends_that_too() -> None:
    limiter = StreamLimiter(max_streams=4, max_per_client=4, idle_timeout=60)
    sid = limiter.open("a")
    assert isinstance(sid, int)
    limiter.abort(sid)  # the client went away while the application was called
    ended = threading.Event()
    limiter.attach(sid, ended.set)
    assert ended.is_set()
