"""POST /api/v1/<jid>/cancel/ and GET /api/v1/<jid>/logs/ through HTTP on the
local backend and real Docker and Podman engines."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests

from pman.backends.docker import parse_engine_time
from pman.backends.slurm.settings import SlurmSettings
from tests.integration.conftest import Pman


def _sh(pman: Pman, script: str, **overrides: Any) -> dict[str, Any]:
    """A job running ``script`` with sh (the host's on local, busybox's in the image)."""
    return pman.body(entrypoint=["sh", "-c", script, "job"], args=[], **overrides)


def _until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)
    return result


def _logs(pman: Pman, jid: str, query: str = "", **kw: Any) -> requests.Response:
    return requests.get(f"{pman.url}/api/v1/{jid}/logs/?{query}", timeout=60, **kw)


def _cancel(pman: Pman, jid: str) -> requests.Response:
    return requests.post(f"{pman.url}/api/v1/{jid}/cancel/", timeout=60)


def _process_gone(jobdir: str) -> bool:
    """No process of this machine names the local job's folder (its supervisor)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if jobdir.encode() in f.read():
                    return False
        except OSError:
            continue
    return True


def test_cancel_stops_the_job_and_keeps_its_record_and_logs(pman: Pman) -> None:
    body = _sh(pman, "echo started-work; sleep 300; echo never")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    pman.wait(jid, until=("started",))
    _until(lambda: b"started-work" in _logs(pman, jid).content, "the job wrote its line")

    resp = _cancel(pman, jid)
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert (job["status"], job["message"]) == ("finishedWithError", "cancelled")
    assert "started-work" in job["logs"]

    # the work is stopped, what holds its logs is kept
    if pman.engine is not None:
        attrs = pman.container(jid)
        assert attrs is not None, "cancel removed the container"
        assert attrs["State"]["Running"] is False
    else:
        jobdir = pman.record(jid).native_id
        assert os.path.isdir(jobdir)
        assert _process_gone(jobdir), "the job's processes survived the cancel"

    # the tracker sees the engine's end of it (exited 137, killed) and leaves it cancelled
    _until(lambda: pman.service.backend.get(jid).state.finished, "the engine saw the end", 60)
    pman.service.tracker.run_once()
    again = pman.get(jid).json()
    assert (again["status"], again["message"]) == ("finishedWithError", "cancelled")
    assert pman.record(jid).state.value == "cancelled"
    assert b"started-work" in _logs(pman, jid).content
    assert b"never" not in _logs(pman, jid).content

    # idempotent
    assert _cancel(pman, jid).json() == job
    assert pman.delete(jid).status_code == 204
    assert pman.get(jid).status_code == 404
    assert _cancel(pman, jid).status_code == 404
    if pman.engine is not None:
        assert pman.container(jid) is None


def test_cancel_of_a_finished_job_changes_nothing(pman: Pman) -> None:
    body = _sh(pman, "echo done")
    assert pman.post(body).status_code == 201
    done = pman.wait(body["jid"])
    resp = _cancel(pman, body["jid"])
    assert resp.status_code == 200
    assert resp.json()["status"] == done["status"] == "finishedSuccessfully"


def _assert_tail(pman: Pman, tail: list[str], whole: list[str], other: str) -> None:
    """``tail`` is the last lines of the log whose lines are ``whole``, where
    ``other`` is the one line written to stderr.

    Podman 4.3.1 (Debian 12's; its issue #19545, fixed by its PR #19562) counts
    a tail in the records of its log file, and appends a record holding the
    first part of a line (conmon's read of the pipe ended inside the line) to
    the record before it, whichever stream that is: in its tail text moves
    from the start of a line to the end of an earlier line, and the tail's
    first line may lack its start. So on Podman the tail has as many lines,
    ``other`` as often, and stdout's text in order with none missing but at
    the very start.
    """
    want = whole[len(whole) - len(tail) :] if tail else []
    if pman.backend == "podman" and tail != want:
        differ = [(i, t, w) for i, (t, w) in enumerate(zip(tail, want, strict=False)) if t != w]
        assert len(tail) == len(want), differ
        got_text, want_text = "".join(tail), "".join(want)
        assert got_text.count(other) == want_text.count(other), differ
        assert want_text.replace(other, "").endswith(got_text.replace(other, "")), differ
    else:
        assert tail == want


def test_full_logs_and_tail(pman: Pman) -> None:
    # more lines than the poll's JOB_LOGS_TAIL (1000) keeps; stderr's line last
    body = _sh(pman, "i=1; while [ $i -le 2000 ]; do echo line $i; i=$((i+1)); done; echo err >&2")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    polled = pman.wait(jid)

    resp = _logs(pman, jid)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.text.endswith("\n")
    lines = resp.text.splitlines()
    # every line whole and each stream's lines in order; where stderr's line
    # falls among stdout's is the engine's (Docker and Podman copy the two
    # pipes apart: "err" can come first, last or anywhere between)
    assert [line for line in lines if line != "err"] == [f"line {i}" for i in range(1, 2001)]
    assert lines.count("err") == 1

    # the poll keeps the log's last JOB_LOGS_TAIL lines
    kept = polled["logs"].splitlines()
    assert len(kept) == 1000
    _assert_tail(pman, kept, lines, "err")
    for n in (3, 1000, 2001, 5000):
        tail = _logs(pman, jid, f"tail={n}").text.splitlines()
        assert len(tail) == min(n, 2001)
        _assert_tail(pman, tail, lines, "err")
    assert _logs(pman, jid, "tail=0").text == ""
    assert _logs(pman, "no-such-job").status_code == 404
    assert _logs(pman, jid, "tail=-2").status_code == 400


def test_follow_streams_until_the_job_ends(pman: Pman) -> None:
    body = _sh(pman, "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    got: list[tuple[float, str]] = []
    with _logs(pman, jid, "follow=true", stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        for line in resp.iter_lines():
            got.append((time.monotonic(), line.decode()))
    # the response ended by itself, with the job, and held every line
    assert [text for _, text in got] == [f"tick {i}" for i in range(1, 7)]
    # lines came as they were written, not all at the end
    assert got[-1][0] - got[0][0] > 1.0
    assert pman.wait(jid)["status"] == "finishedSuccessfully"


def test_a_client_that_goes_away_ends_the_stream(pman: Pman) -> None:
    body = _sh(pman, "while true; do echo tick; sleep 0.2; done")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    backend = pman.service.backend
    real = backend.iter_logs
    closed = threading.Event()
    engine_streams: list[Any] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        stream = real(*args, **kwargs)
        engine_streams.append(stream)

        def chunks() -> Any:
            try:
                yield from stream
            finally:
                closed.set()

        return chunks()

    backend.iter_logs = watched  # type: ignore[method-assign]
    try:
        resp = _logs(pman, jid, "follow=true", stream=True)
        assert next(resp.iter_lines()) == b"tick"
        assert not closed.is_set()
        resp.close()
        # the next chunk pman writes fails: the generator and the engine stream are closed
        assert closed.wait(30), "the log stream outlived its client"
        # the backend's own generator ran its cleanup (the engine's response is closed)
        inner = getattr(engine_streams[0], "_chunks", engine_streams[0])  # in its LogStream
        assert inner.gi_frame is None
    finally:
        backend.iter_logs = real  # type: ignore[method-assign]
    pman.wait(jid, until=("started",))  # the job itself goes on


@pytest.mark.timeout(600)  # a few seconds here; the job alone may take 300 s (below)
def test_a_50_mb_log_streams_without_loading_it(make_pman: Callable[..., Pman]) -> None:
    pman = make_pman("local")
    # 50 MiB of 1 KiB lines
    line = "x" * 1023
    body = _sh(pman, f"i=0; while [ $i -lt 51200 ]; do echo {line}; i=$((i+1)); done")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    pman.wait(jid, timeout=300)

    def rss() -> int:
        with open("/proc/self/status") as f:
            for entry in f:
                if entry.startswith("VmRSS:"):
                    return int(entry.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    # pman serves in this process: its memory is this process's memory
    base = peak = rss()
    total = 0
    with _logs(pman, jid, stream=True) as resp:
        for chunk in resp.iter_content(65536):
            total += len(chunk)
            peak = max(peak, rss())
    assert total == 51200 * 1024
    assert peak - base < 20 * 1024 * 1024, f"RSS grew by {(peak - base) >> 20} MiB"
    tail = _logs(pman, jid, "tail=2").content
    assert tail == (line + "\n").encode() * 2


def test_since_needs_timestamps_the_local_backend_lacks(make_pman: Callable[..., Pman]) -> None:
    pman = make_pman("local")
    body = _sh(pman, "echo hi")
    assert pman.post(body).status_code == 201
    resp = _logs(pman, body["jid"], "since=2026-01-01T00:00:00Z")
    assert resp.status_code == 400
    assert "since" in resp.json()["fields"]


def test_since_on_docker(make_pman: Callable[..., Pman]) -> None:
    pman = make_pman("docker")
    body = _sh(pman, "echo early; sleep 1; echo late")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    pman.wait(jid)
    assert _logs(pman, jid).text == "early\nlate\n"
    # a time between the two lines as the engine stamped them (since filters on
    # the engine's stamps), not as this test saw them come, which load may delay
    assert pman.engine is not None
    stamped = pman.engine.logs(jid, timestamps=True).decode().splitlines()
    (early, _), (late, _) = (line.split(" ", 1) for line in stamped)
    early_at, late_at = parse_engine_time(early), parse_engine_time(late)
    assert early_at is not None and late_at is not None
    assert late_at - early_at > timedelta(seconds=0.5)
    middle = (early_at + (late_at - early_at) / 2).isoformat()
    assert _logs(pman, jid, f"since={quote(middle)}").text == "late\n"
    before = (early_at - timedelta(milliseconds=1)).isoformat()
    assert _logs(pman, jid, f"since={quote(before)}").text == "early\nlate\n"


# ------------------------------------------------------------------ swarm
def test_swarm_cancel_scales_to_zero_and_keeps_the_logs(make_pman: Callable[..., Pman]) -> None:
    pman = make_pman("swarm")
    body = _sh(pman, "echo started-work; sleep 300", cpu_limit=100)
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    pman.wait(jid, until=("started",))
    _until(lambda: b"started-work" in _logs(pman, jid).content, "the job wrote its line")
    resp = _cancel(pman, jid)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["message"]) == ("finishedWithError", "cancelled")
    assert pman.engine is not None
    svc = pman.engine.inspect_service(jid)
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 0

    def stopped() -> bool:
        tasks = pman.engine.tasks(filters={"service": svc["ID"]})  # type: ignore[union-attr]
        return bool(tasks) and all(t["Status"]["State"] == "shutdown" for t in tasks)

    _until(stopped, "the swarm shut the task down")
    pman.service.tracker.run_once()
    assert pman.get(jid).json()["message"] == "cancelled"
    assert _logs(pman, jid).text == "started-work\n"
    assert pman.delete(jid).status_code == 204


def test_swarm_follow_ends_with_the_job(make_pman: Callable[..., Pman]) -> None:
    pman = make_pman("swarm")
    body = _sh(pman, "for i in 1 2 3 4; do echo tick $i; sleep 0.5; done", cpu_limit=100)
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    pman.wait(jid, until=("started", *("finishedSuccessfully",)))
    with _logs(pman, jid, "follow=true", stream=True) as resp:
        assert resp.status_code == 200
        lines = [line.decode() for line in resp.iter_lines()]
    assert lines == [f"tick {i}" for i in range(1, 5)]
    assert _logs(pman, jid, "tail=1").text == "tick 4\n"


# ------------------------------------------------------------------ slurm
def test_slurm_cancel_keeps_the_job_folder_and_follow_ends(
    make_pman: Callable[..., Pman],
) -> None:
    pman = make_pman("slurm", SLURM_CONTAINER_RUNTIME="none")
    body = _sh(pman, "echo started-work; sleep 300")
    jid = body["jid"]
    assert pman.post(body).status_code == 201
    _until(lambda: b"started-work" in _logs(pman, jid).content, "the job wrote its line", 60)
    resp = _cancel(pman, jid)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["message"]) == ("finishedWithError", "cancelled")
    slurm = pman.service.settings.resource.engine_as(SlurmSettings)
    assert slurm.job_dir is not None
    jobdir = slurm.job_dir / jid
    assert (jobdir / "log").exists()
    _until(lambda: pman.service.backend.get(jid).state.finished, "SLURM ended the job", 60)
    pman.service.tracker.run_once()
    assert pman.get(jid).json()["message"] == "cancelled"
    # a followed log of a job that has ended returns at once with the whole log,
    # SLURM's own word on the cancel included
    text = _logs(pman, jid, "follow=true").text
    assert text.startswith("started-work\n") and "CANCELLED" in text

    body = _sh(pman, "for i in 1 2 3; do echo tick $i; sleep 0.5; done")
    assert pman.post(body).status_code == 201
    with _logs(pman, body["jid"], "follow=true", stream=True) as resp:
        lines = [line.decode() for line in resp.iter_lines()]
    assert lines == ["tick 1", "tick 2", "tick 3"]
