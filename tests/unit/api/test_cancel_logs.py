"""POST /api/v1/<jid>/cancel/ and GET /api/v1/<jid>/logs/ against the FakeBackend,
and the chunked log-file readers the file-based backends use."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from pman.backends.kit.files import read_file_chunks, tail_offset
from pman.errors import BackendError
from pman.models import JobInfo, JobState
from pman.registry import Registry
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


def _registry(client: FlaskClient) -> Registry:
    return client.application.extensions["pman"].service.registry


def test_cancel_keeps_the_record_and_reports_cancelled(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], Any]
) -> None:
    client.post("/api/v1/", json=job_body(jid="c1"))
    fake.logs_text["c1"] = "one\ntwo\n"
    resp = client.post("/api/v1/c1/cancel/")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "finishedWithError"
    assert body["message"] == "cancelled"
    assert body["logs"] == "one\ntwo\n"  # the final logs are kept with the record
    assert fake.cancelled == ["c1"] and fake.deleted == []
    # the engine now says "exited 137": the tracker must not turn it into a failure
    track()
    again = client.get("/api/v1/c1/").get_json()
    assert (again["status"], again["message"]) == ("finishedWithError", "cancelled")
    listed = client.get("/api/v1/jobs/?status=cancelled").get_json()["jobs"]
    assert [(j["jid"], j["reason"]) for j in listed] == [("c1", "cancelled")]
    events = client.get("/api/v1/c1/events/").get_json()["events"]
    assert events[-1]["state"] == "cancelled"
    # idempotent: a second cancel answers the same body and does not call the engine
    assert client.post("/api/v1/c1/cancel/").get_json() == body
    assert fake.cancelled == ["c1"]
    # DELETE still removes it
    assert client.delete("/api/v1/c1/").status_code == 204
    assert fake.deleted == ["c1"]
    assert client.get("/api/v1/c1/").status_code == 404


def test_cancelling_a_finished_job_leaves_it_as_it_ended(
    client: FlaskClient, fake: FakeBackend
) -> None:
    client.post("/api/v1/", json=job_body(jid="c2"))
    # the engine knows it succeeded; the tracker has not looked yet
    fake.set_state("c2", JobState.SUCCEEDED, exit_code=0, message="exited with code 0")
    resp = client.post("/api/v1/c2/cancel/")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "finishedSuccessfully"
    assert fake.cancelled == []


def test_cancel_unknown_is_404_and_engine_failure_is_5xx(
    client: FlaskClient, fake: FakeBackend
) -> None:
    assert client.post("/api/v1/nope/cancel/").status_code == 404
    client.post("/api/v1/", json=job_body(jid="c3"))
    fake.fail_with = BackendError("engine broke")
    resp = client.post("/api/v1/c3/cancel/")
    assert resp.status_code == 502
    assert "engine broke" in resp.get_json()["message"]
    fake.fail_with = None
    # nothing was recorded: the job still runs as far as pman knows
    assert client.get("/api/v1/c3/").get_json()["status"] == "started"


def test_a_kill_recorded_while_cancelling_is_still_a_cancel(
    client: FlaskClient, fake: FakeBackend
) -> None:
    """The tracker may record the engine's "exited 137" between the engine's
    stop and the registry's cancel: the cancel wins; an outcome recorded before
    the cancel was asked for does not change."""
    client.post("/api/v1/", json=job_body(jid="r1"))
    client.post("/api/v1/", json=job_body(jid="r2"))
    reg = _registry(client)
    r1, r2 = reg.active("r1"), reg.active("r2")
    killed = JobInfo(name="r1", state=JobState.FAILED, exit_code=137, message="exited 137")
    asked = datetime.now(UTC)
    reg.record(r1.id, killed)
    assert reg.mark_cancelled(r1.id, asked)
    assert reg.get(r1.id).state is JobState.CANCELLED
    reg.record(r2.id, JobInfo(name="r2", state=JobState.SUCCEEDED, exit_code=0))
    assert not reg.mark_cancelled(r2.id, datetime.now(UTC) + timedelta(seconds=1))
    assert reg.get(r2.id).state is JobState.SUCCEEDED
    # later engine reports never change a cancelled record, but its logs are kept
    reg.record(r1.id, JobInfo(name="r1", state=JobState.CANCELLED, message="x"), logs="last\n")
    rec = reg.get(r1.id)
    assert (rec.state, rec.message, rec.logs) == (JobState.CANCELLED, "cancelled", "last\n")


def test_logs_endpoint_streams_text_with_tail_since_follow(
    client: FlaskClient, fake: FakeBackend
) -> None:
    client.post("/api/v1/", json=job_body(jid="l1"))
    fake.logs_text["l1"] = "a\nb\nc\n"
    resp = client.get("/api/v1/l1/logs/")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.is_streamed
    assert resp.get_data() == b"a\nb\nc\n"
    assert client.get("/api/v1/l1/logs/?tail=2").get_data() == b"b\nc\n"
    assert client.get("/api/v1/l1/logs/?tail=0").get_data() == b""
    client.get("/api/v1/l1/logs/?since=2026-01-02T03:04:05Z&follow=true")
    client.get("/api/v1/l1/logs/?since=2026-01-02T03:04:05")
    assert fake.log_requests[-2:] == [
        ("l1", None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), True),
        ("l1", None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), False),
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("tail=-1", "tail"),
        ("tail=x", "tail"),
        ("tail=1.5", "tail"),
        ("since=yesterday", "since"),
        ("since=12", "since"),
        ("follow=maybe", "follow"),
    ],
)
def test_bad_logs_queries_are_400_naming_the_parameter(
    client: FlaskClient, query: str, field: str
) -> None:
    client.post("/api/v1/", json=job_body(jid="l2"))
    resp = client.get(f"/api/v1/l2/logs/?{query}")
    assert resp.status_code == 400
    assert field in resp.get_json()["fields"]


def test_logs_of_unknown_job_is_404(client: FlaskClient) -> None:
    resp = client.get("/api/v1/nope/logs/")
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] == "application/json"


def test_the_default_iter_logs_refuses_what_it_cannot_do(fake: FakeBackend) -> None:
    from pman.backends.base import Backend
    from pman.errors import UnsupportedOption

    fake.jobs["x"] = JobInfo(name="x", state=JobState.RUNNING)
    fake.logs_text["x"] = "1\n2\n"
    assert b"".join(Backend.iter_logs(fake, "x", tail=1)) == b"2\n"
    with pytest.raises(UnsupportedOption):
        Backend.iter_logs(fake, "x", follow=True)
    with pytest.raises(UnsupportedOption):
        Backend.cancel(fake, "x")


# ------------------------------------------------------------- file chunks
@pytest.fixture
def logfile(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(1, 1001)))
    return path


@pytest.mark.parametrize("block", [1, 7, 64, 65536])
def test_tail_offset_finds_the_last_lines_reading_backwards(logfile: Path, block: int) -> None:
    data = logfile.read_bytes()
    for n in (0, 1, 2, 999, 1000, 5000):
        expected = b"".join(data.splitlines(keepends=True)[-n:]) if n else b""
        assert data[tail_offset(logfile, n, block=block) :] == expected, n
    logfile.write_bytes(b"a\nb")  # a last line without its newline is a line
    assert tail_offset(logfile, 1, block=block) == 2
    assert tail_offset(logfile, 5, block=block) == 0
    assert tail_offset(logfile.with_name("missing"), 3) == 0


def test_file_chunks_are_bounded(logfile: Path) -> None:
    chunks = list(read_file_chunks(logfile, chunk=100))
    assert max(len(c) for c in chunks) == 100
    assert b"".join(chunks) == logfile.read_bytes()
    assert b"".join(read_file_chunks(logfile, tail=2)) == b"line 999\nline 1000\n"
    assert list(read_file_chunks(logfile.with_name("missing"))) == []


def test_following_a_file_reads_what_is_appended_until_the_writer_ends(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"first\n")
    writes = [b"second\n", b"third\n", b""]
    checks = iter([False, False, False, True])

    def ended() -> bool:
        done = next(checks)
        if writes:
            with path.open("ab") as f:
                f.write(writes.pop(0))
        return done

    got = b"".join(read_file_chunks(path, follow_until=ended, poll=0))
    assert got == b"first\nsecond\nthird\n"


def test_closing_a_followed_file_stream_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"x\n")
    calls: list[int] = []

    def never() -> bool:
        calls.append(1)
        return False

    stream = read_file_chunks(path, follow_until=never, poll=0)
    assert next(stream) == b"x\n"
    stream.close()  # the client went away
    before = len(calls)
    with pytest.raises(StopIteration):
        next(stream)
    assert len(calls) == before
