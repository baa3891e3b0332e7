"""The tracker keeps the registry in step with the engine, with no poll at all,
across pman restarts, engine outages and jobs it never submitted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from pman.labels import LABEL_AUID, LABEL_FINGERPRINT, LABEL_JID, LABEL_MANAGED
from pman.models import JobState
from tests.helpers import job_body, late_memhog, start_server
from tests.integration.conftest import PLUGIN_BIN, TEST_IMAGE, Pman, engine_client


def test_tracker_sees_completion_and_failure_without_polls(pman: Pman) -> None:
    ok, bad = pman.body(), pman.body("failplugin")
    for b in (ok, bad):
        assert pman.post(b).status_code == 201
    done = pman.wait_record(ok["jid"])
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0)
    assert "copyplugin: done" in (done.logs or ""), "final logs are kept in the registry"
    failed = pman.wait_record(bad["jid"])
    assert (failed.state, failed.exit_code, failed.reason) == (JobState.FAILED, 3, "exit_code")
    # and polls now answer from that record
    assert pman.get(bad["jid"]).json()["logs"] == failed.logs


def test_the_engines_events_drive_the_tracker(cpman: Pman, monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker's and Podman's event streams: with polling slowed to minutes, a
    job's end is still recorded within seconds."""
    from pman import tracker as tracker_module

    tracker = cpman.service.tracker
    monkeypatch.setattr(tracker_module, "WATCHED_POLL_S", 600.0)
    tracker.interval = tracker.idle_interval = 600.0
    deadline = time.monotonic() + 30
    while not tracker.watching and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tracker.watching, "the tracker never opened the engine's event stream"
    time.sleep(1.5)  # whatever wait it was in when the intervals changed ends
    body = cpman.body("sleeper", args=["1"], type="fs")
    assert cpman.post(body).status_code == 201
    # polls come every 10 minutes now: only an event can make it this soon
    rec = cpman.wait_record(body["jid"], timeout=90)
    assert rec.state is JobState.SUCCEEDED
    assert "sleeper: woke up" in (rec.logs or "")


def test_tracker_sees_an_oom_kill_without_polls(cpman: Pman) -> None:
    body = cpman.body(**late_memhog("256M"), memory_limit=32, type="fs")
    assert cpman.post(body).status_code == 201
    rec = cpman.wait_record(body["jid"])
    assert rec.state is JobState.FAILED
    assert "out of memory" in rec.message


def test_events_record_every_transition(pman: Pman) -> None:
    body = pman.body(args=["--sleep", "1"])
    assert pman.post(body).status_code == 201
    pman.wait_record(body["jid"])
    events = requests.get(f"{pman.url}/api/v1/{body['jid']}/events/", timeout=10).json()
    states = [e["state"] for e in events["events"]]
    assert states[0] == "queued" and states[-1] == "succeeded"
    assert "running" in states
    times = [e["at"] for e in events["events"]]
    assert times == sorted(times)
    # history survives DELETE; the jid is free again
    assert pman.delete(body["jid"]).status_code == 204
    after = requests.get(f"{pman.url}/api/v1/{body['jid']}/events/", timeout=10).json()
    assert after["events"][-1]["message"] == "deleted"
    again = pman.post({**body, "args": ["--prefix", "second-"]})
    assert again.status_code == 201, again.text


@pytest.mark.parametrize(
    "backend_name",
    [
        "local",
        "docker",
    ],
)
def test_restart_of_pman_while_jobs_run_and_finish(
    make_pman: Callable[..., Pman], backend_name: str
) -> None:
    first = make_pman(backend_name)
    quick, slow = first.body(), first.body("sleeper", args=["2"], type="fs")
    for b in (quick, slow):
        assert first.post(b).status_code == 201
    first.stop()  # pman goes away while both jobs run
    # ... and both finish while nobody watches (asked of the engine, not of pman)
    deadline = time.monotonic() + 60
    while not all(first.service.backend.get(b["jid"]).state.finished for b in (quick, slow)):
        assert time.monotonic() < deadline, "the jobs never ended"
        time.sleep(0.1)
    second = make_pman(backend_name, storebase=first.storebase)
    second.jids += first.jids
    for b in (quick, slow):
        rec = second.wait_record(b["jid"])
        assert rec.state is JobState.SUCCEEDED, rec
        events = second.service.registry.events(rec.id)
        assert events[0].state is JobState.QUEUED
        assert events[-1].state is JobState.SUCCEEDED
    assert "sleeper: woke up" in second.get(slow["jid"]).json()["logs"]


def _podman_service(sock: Path) -> subprocess.Popen[bytes]:
    """A Podman API service of this test's own on ``sock`` (the same containers
    as the shared one's), answering."""
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        cwd="/",  # conmon fails containers of a service whose folder is gone
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            docker.APIClient(base_url=f"unix://{sock}", version="1.41", timeout=5).ping()
            return proc
        except Exception:
            assert proc.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman system service never answered"
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def test_engine_outage_while_pman_runs(make_pman: Callable[..., Pman]) -> None:
    """Podman's containers outlive its API service, so the service can be
    stopped and started again under a running job. The service is one of the
    test's own: the shared one (other tests, other runs) is left alone."""
    engine_client("podman")  # skip (or fail, in CI) without Podman and the test image
    folder = Path(tempfile.mkdtemp(prefix="pman-podman-"))
    sock = folder / "podman.sock"
    service = _podman_service(sock)
    try:
        p = make_pman("podman", DOCKER_HOST=f"unix://{sock}")
        body = p.body("sleeper", args=["3"], type="fs")
        assert p.post(body).status_code == 201
        p.wait(body["jid"], until=("started",))
        _stop(service)

        def health() -> int:
            return requests.get(f"{p.url}/health", timeout=30).status_code

        deadline = time.monotonic() + 60
        while health() != 503:
            assert time.monotonic() < deadline, "pman never noticed the outage"
            time.sleep(0.1)
        poll = p.get(body["jid"])
        assert poll.status_code == 200, "polls are answered from the registry during an outage"
        assert poll.json()["status"] == "started"

        # the job ends while the engine's API is down (Podman's CLI needs no service)
        def status() -> str:
            return subprocess.run(
                ["podman", "inspect", "--format", "{{.State.Status}}", body["jid"]],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()

        deadline = time.monotonic() + 60
        while status() != "exited":
            assert time.monotonic() < deadline, f"the job never ended: {status()!r}"
            time.sleep(0.2)
        service = _podman_service(sock)
        done = p.wait(body["jid"], timeout=60)
        assert done["status"] == "finishedSuccessfully", done
        assert "sleeper: woke up" in done["logs"]
    finally:
        _stop(service)
        shutil.rmtree(folder, ignore_errors=True)


def test_unknown_labelled_container_is_adopted(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("docker")
    api = engine_client("docker")
    jid = f"stray-{uuid.uuid4().hex[:8]}"
    p.jids.append(jid)
    labels = {LABEL_MANAGED: "true", LABEL_JID: jid, LABEL_AUID: "dave", LABEL_FINGERPRINT: "x"}
    c = api.create_container(
        TEST_IMAGE, command=["sh", "-c", "echo stray; exit 0"], name=jid, labels=labels
    )
    api.start(c)  # jid is in p.jids: removed at teardown whatever happens
    p.service.tracker.request_reconcile()
    rec = p.wait_record(jid, timeout=30)
    assert (rec.state, rec.auid) == (JobState.SUCCEEDED, "dave")
    assert "stray" in (rec.logs or "")
    events = p.service.registry.events(rec.id)
    assert "adopted" in events[0].message
    listed = requests.get(f"{p.url}/api/v1/jobs/", params={"auid": "dave"}, timeout=10).json()
    assert [j["jid"] for j in listed["jobs"]] == [jid]
    assert p.delete(jid).status_code == 204
    assert p.container(jid) is None


def test_job_removed_behind_pmans_back_is_marked_vanished(cpman: Pman) -> None:
    body = cpman.body("sleeper", args=["60"], type="fs")
    assert cpman.post(body).status_code == 201
    cpman.wait(body["jid"], until=("started",))
    # removed while pman was not looking (its tracker stopped): when it looks
    # again, the job is gone
    assert cpman.engine is not None
    cpman.service.tracker.stop()
    cpman.engine.remove_container(body["jid"], force=True)
    from pman import tracker as tracker_module

    # the record must be past its submission grace for "vanished" to be decided
    grace = tracker_module.SUBMIT_GRACE_S
    tracker_module.SUBMIT_GRACE_S = 0.0
    try:
        cpman.service.tracker.start()
        rec = cpman.wait_record(body["jid"], timeout=30)
    finally:
        tracker_module.SUBMIT_GRACE_S = grace
    assert (rec.state, rec.reason) == (JobState.SYSTEM_ERROR, "vanished")
    assert cpman.get(body["jid"]).json()["status"] == "finishedWithError"


def test_docker_jobs_with_a_postgresql_registry(
    make_pman: Callable[..., Pman], postgresql_url: str
) -> None:
    p = make_pman("docker", PMAN_DATABASE_URL=postgresql_url)
    body = p.body()
    assert p.post(body).status_code == 201
    rec = p.wait_record(body["jid"])
    assert rec.state is JobState.SUCCEEDED
    assert p.get(body["jid"]).json()["status"] == "finishedSuccessfully"


def _flock_holders(path: Path) -> set[int]:
    """Pids holding a flock on ``path``, from /proc/locks."""
    st = path.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "->" in parts:
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == dev:
            holders.add(int(parts[4]))
    return holders


def _children(pid: int) -> dict[int, str]:
    """Child pids of ``pid`` with their command lines."""
    kids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids[int(entry.name)] = cmd
    return kids


SERVERS = {
    # pman serve: granian workers, and the tracker in a process of its own
    "pman-serve": ["{pman}", "serve", "--port", "0", "--workers", "2"],
    # upstream's way of running pman: the workers' trackers share the work
    "gunicorn": ["{gunicorn}", "--bind", "127.0.0.1:0", "--workers", "2", "pman.wsgi:application"],
}


@pytest.mark.local
@pytest.mark.parametrize("server", sorted(SERVERS))
def test_two_workers_one_tracker(tmp_path: Path, server: str) -> None:
    """One tracker works however many workers there are; when it dies, a
    standby takes over (under gunicorn, one of the workers)."""
    storebase = tmp_path / "sb"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    data = tmp_path / "data"
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(data),
        "PMAN_AUTH": "none",
    }
    bindir = Path(sys.executable).parent
    argv = [a.format(pman=bindir / "pman", gunicorn=bindir / "gunicorn") for a in SERVERS[server]]
    proc, url, workers = start_server(argv, env, 2)
    try:
        body = job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")])
        assert requests.post(f"{url}/api/v1/", json=body, timeout=30).status_code == 201
        lock = data / "pman.db.tracker.lock"
        deadline = time.monotonic() + 60
        while not _flock_holders(lock) and time.monotonic() < deadline:
            time.sleep(0.1)
        holders = _flock_holders(lock)
        trackers = {p for p, cmd in _children(proc.pid).items() if "pman track" in cmd}
        if server == "pman-serve":
            assert len(trackers) == 1
            assert holders == trackers, (holders, trackers, workers)
        else:
            assert not trackers
            assert len(holders) == 1 and holders <= workers, (holders, workers)
        done = _wait_finished(url, body["jid"])
        assert done["status"] == "finishedSuccessfully", done
        # the tracker goes away: one standby takes over the tracking
        leader = holders.pop()
        os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 60
        now: set[int] = set()
        while time.monotonic() < deadline:
            now = _flock_holders(lock) - {leader}
            if now:
                break
            time.sleep(0.2)
        assert len(now) == 1, "no single standby took over the tracker lock"
        second = job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")], output_dir="key-1/out-2")
        assert requests.post(f"{url}/api/v1/", json=second, timeout=30).status_code == 201
        done = _wait_finished(url, second["jid"])
        assert done["status"] == "finishedSuccessfully", f"the standby tracker: {done}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _wait_finished(url: str, jid: str, timeout: float = 60) -> dict[str, Any]:
    """The job's v1 body once it has finished (or after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        data = requests.get(f"{url}/api/v1/{jid}/", timeout=30).json()
        if data["status"].startswith("finished") or time.monotonic() > deadline:
            return data
        time.sleep(0.1)
