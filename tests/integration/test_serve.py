"""The installed `pman serve` command: granian, several workers, real HTTP."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import job_body, start_server
from tests.integration.conftest import PLUGIN_BIN

pytestmark = pytest.mark.local


TOKEN = secrets.token_hex(32)


def authed() -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    storebase = tmp_path / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("served\n")
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
        "PMAN_AUTH_TOKENS": TOKEN,
        "PMAN_AUTH_USER": "chris",
        "PMAN_AUTH_PASSWORD": "chris1234",
        "SECRET_KEY": secrets.token_hex(32),
    }
    pman = Path(sys.executable).with_name("pman")
    proc, url, _ = start_server([str(pman), "serve", "--port", "0", "--workers", "3"], env, 3)
    try:
        yield url, storebase
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_pman_serve_runs_jobs_across_workers(served: tuple[str, Path]) -> None:
    url, storebase = served
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    http = authed()
    bodies = [
        job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")], output_dir=f"key-1/out-{i}")
        for i in range(6)
    ]
    for b in bodies:
        assert http.post(f"{url}/api/v1/", json=b, timeout=30).status_code == 201
    # every worker answers for every job: the state is not in one worker's memory
    for b in bodies:
        deadline = time.monotonic() + 60
        while True:
            data = http.get(f"{url}/api/v1/{b['jid']}/", timeout=30).json()
            if data["status"] == "finishedSuccessfully" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert data["status"] == "finishedSuccessfully", data
        assert (storebase / b["output_dir"] / "out-data.txt").read_text() == "served\n"
        assert http.delete(f"{url}/api/v1/{b['jid']}/", timeout=30).status_code == 204


def test_processes_pman_starts_run_the_installed_pman_whatever_the_folder(tmp_path: Path) -> None:
    """The tracker process and the local job supervisor are started as
    ``python -m ...``: from a folder that holds another pman (a checkout of a
    different version, say) they must still run the installed one."""
    other = tmp_path / "elsewhere"
    marker = tmp_path / "other-pman-imported"
    (other / "pman").mkdir(parents=True)
    (other / "pman" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('not this pman')\n"
    )
    storebase = tmp_path / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("installed\n")
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
        "PMAN_AUTH": "none",
    }
    env.pop("PYTHONSAFEPATH", None)
    env.pop("PYTHONPATH", None)
    pman = Path(sys.executable).with_name("pman")
    proc, url, _ = start_server([str(pman), "serve", "--port", "0"], env, 1, cwd=other)
    try:
        body = job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")], output_dir="key-1/out")
        assert requests.post(f"{url}/api/v1/", json=body, timeout=30).status_code == 201
        deadline = time.monotonic() + 60
        while True:
            data = requests.get(f"{url}/api/v1/{body['jid']}/", timeout=30).json()
            if data["status"].startswith("finished") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert data["status"] == "finishedSuccessfully", data
        assert (storebase / "key-1" / "out" / "out-data.txt").read_text() == "installed\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not marker.exists(), "a process pman started imported the pman of its folder"


def test_every_endpoint_but_health_and_docs_needs_credentials(served: tuple[str, Path]) -> None:
    url, _ = served
    http = authed()
    body = job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")])
    assert http.post(f"{url}/api/v1/", json=body, timeout=30).status_code == 201
    jid = body["jid"]
    attempts = [
        ("GET", "/api/v1/"),
        ("POST", "/api/v1/"),
        ("GET", f"/api/v1/{jid}/"),  # the poll fast path too
        ("GET", f"/api/v1/{jid}/events/"),
        ("DELETE", f"/api/v1/{jid}/"),
        ("GET", "/api/v1/jobs/"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/no-such-job/"),
    ]
    for header in (None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"):
        headers = {"Authorization": header} if header else {}
        for method, path in attempts:
            resp = requests.request(method, url + path, headers=headers, json=body, timeout=30)
            assert resp.status_code == 401, (method, path, header, resp.text)
            assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="pman"')
            # the same answer whatever the job: nothing about it is revealed
            assert jid not in resp.text and resp.json()["message"] in (
                "authentication required: send Authorization: Bearer <token>",
                "invalid credentials",
            )
    # the job was neither deleted nor submitted twice by those
    assert http.get(f"{url}/api/v1/{jid}/", timeout=30).status_code == 200
    assert requests.get(f"{url}/health", timeout=30).status_code == 200
    # the API's documentation holds no job data: open, for GET only
    for path in ("/api/v1/openapi.json", "/api/v1/docs/", "/api/v1/docs/swagger-ui.css"):
        assert requests.get(url + path, timeout=30).status_code == 200, path
        assert requests.post(url + path, timeout=30).status_code == 401, path


def test_login_gives_a_jwt_that_works_until_it_expires(served: tuple[str, Path]) -> None:
    url, _ = served
    wrong = requests.post(
        f"{url}/api/v1/auth-token/",
        json={"pman_user": "chris", "pman_password": "nope"},
        timeout=30,
    )
    assert wrong.status_code == 401 and "token" not in wrong.json()
    resp = requests.post(
        f"{url}/api/v1/auth-token/",
        json={"pman_user": "chris", "pman_password": "chris1234"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    token = resp.json()["token"]
    ok = requests.get(f"{url}/api/v1/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code == 200
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = requests.get(f"{url}/api/v1/", headers={"Authorization": f"Bearer {forged}"}, timeout=30)
    assert bad.status_code == 401


def test_bad_settings_stop_pman_serve_with_one_message(tmp_path: Path) -> None:
    pman = Path(sys.executable).with_name("pman")
    env = {**os.environ, "CONTAINER_ENV": "kubernetes-ish", "JOB_LOGS_TAIL": "lots"}
    env.pop("STOREBASE", None)
    proc = subprocess.run(
        [str(pman), "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    for name in ("CONTAINER_ENV", "JOB_LOGS_TAIL", "STOREBASE"):
        assert name in proc.stderr
    assert "Traceback" not in proc.stderr


def test_logs_stream_and_cancel_under_granian(served: tuple[str, Path]) -> None:
    """The logs of a job, followed through granian and the WSGI middlewares
    (authentication, the poll fast path) as they are written; then cancel."""
    url, _ = served
    http = authed()
    script = "for i in 1 2 3 4; do echo tick $i; sleep 0.5; done"
    body = job_body(entrypoint=["sh", "-c", script, "job"], args=[])
    assert http.post(f"{url}/api/v1/", json=body, timeout=30).status_code == 201
    logs = f"{url}/api/v1/{body['jid']}/logs/"
    assert requests.get(logs, timeout=30).status_code == 401
    got: list[tuple[float, bytes]] = []
    with http.get(f"{logs}?follow=true", stream=True, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        for line in resp.iter_lines():
            got.append((time.monotonic(), line))
    assert [line for _, line in got] == [b"tick 1", b"tick 2", b"tick 3", b"tick 4"]
    assert got[-1][0] - got[0][0] > 1.0  # streamed as written, not buffered to the end

    body = job_body(entrypoint=["sh", "-c", "echo working; sleep 300", "job"], args=[])
    assert http.post(f"{url}/api/v1/", json=body, timeout=30).status_code == 201
    deadline = time.monotonic() + 60
    while b"working" not in http.get(f"{url}/api/v1/{body['jid']}/logs/", timeout=30).content:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    resp = http.post(f"{url}/api/v1/{body['jid']}/cancel/", timeout=30)
    assert resp.status_code == 200
    assert (resp.json()["status"], resp.json()["message"]) == ("finishedWithError", "cancelled")
    assert http.get(f"{url}/api/v1/{body['jid']}/", timeout=30).json()["message"] == "cancelled"
