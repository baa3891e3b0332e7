"""/metrics, request ids and JSON logs against real engines and the real `pman serve`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import job_body, start_server
from tests.integration.conftest import PLUGIN_BIN, Pman

Samples = dict[tuple[Any, ...], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (a
    sample may carry more: the compute resource, since issue 15)."""
    want = set(labels.items())
    return sum(v for (n, *pairs), v in samples.items() if n == name and want <= set(pairs))


def scrape(url: str, session: requests.Session | None = None) -> Samples:
    resp = (session or requests).get(f"{url}/metrics", timeout=30)
    assert resp.status_code == 200, resp.text
    return parse(resp.text)


@pytest.mark.parametrize(
    "backend",
    [
        "local",
        "docker",
    ],
)
def test_metrics_change_as_a_job_runs(backend: str, make_pman: Callable[..., Pman]) -> None:
    p = make_pman(backend)
    before = scrape(p.url)
    body = p.body("sleeper", args=["2"])
    assert p.post(body).status_code == 201
    jid = body["jid"]
    p.wait(jid, until=("started",), timeout=60)
    running = scrape(p.url)
    # the job is counted as running (or, for a moment, still queued) on its backend
    assert (
        value(running, "pman_jobs", backend=backend, state="running")
        + value(running, "pman_jobs", backend=backend, state="queued")
        >= 1
    )
    p.wait(jid, timeout=60)
    done = scrape(p.url)
    succeeded = "pman_jobs"
    assert (
        value(done, succeeded, backend=backend, state="succeeded")
        - value(before, succeeded, backend=backend, state="succeeded")
        == 1
    )
    assert value(done, "pman_jobs", backend=backend, state="running") == 0
    # requests by route template: the POST, and the polls p.wait made
    got = "pman_http_requests_total"
    post = {"method": "POST", "route": "/api/v1/", "code": "201"}
    assert value(done, got, **post) - value(before, got, **post) == 1
    poll = {"method": "GET", "route": "/api/v1/{jid}/", "code": "200"}
    assert value(done, got, **poll) - value(before, got, **poll) >= 2
    # the engine calls: the submission, and the tracker's reads
    calls = "pman_engine_call_duration_seconds_count"
    for op in ("submit", "get", "logs"):
        grew = value(done, calls, backend=backend, operation=op) - value(
            before, calls, backend=backend, operation=op
        )
        assert grew >= 1, op
    assert (
        value(done, "pman_engine_call_duration_seconds_sum", backend=backend, operation="submit")
        > 0
    )
    cycles = "pman_tracker_cycles_total"
    assert value(done, cycles, result="ok") > value(before, cycles, result="ok")
    assert ("pman_tracker_lag_seconds",) in done
    assert value(done, "pman_tracker_visibility_lag_seconds_count") > value(
        before, "pman_tracker_visibility_lag_seconds_count"
    )
    assert p.delete(jid).status_code == 204
    after_delete = scrape(p.url)
    assert value(after_delete, "pman_jobs", backend=backend, state="succeeded") == value(
        before, "pman_jobs", backend=backend, state="succeeded"
    )
    ops = "pman_engine_call_duration_seconds_count"
    assert value(after_delete, ops, backend=backend, operation="delete") > value(
        done, ops, backend=backend, operation="delete"
    )
    assert jid not in requests.get(f"{p.url}/metrics", timeout=30).text


# ---------------------------------------------------------------- pman serve
TOKEN = secrets.token_hex(32)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """`pman serve` with 2 workers, authentication on, JSON logs (production's
    default), stdout (the access log) to a file; its metrics folder given, with a
    stale file of an earlier run in it."""
    storebase = tmp_path / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("served\n")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"\0" * 64)  # an earlier run's
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
        "PMAN_AUTH_TOKENS": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "APPLICATION_MODE": "production",
    }
    env.pop("PMAN_LOG_FORMAT", None)
    stdout = tmp_path / "stdout.log"
    with stdout.open("w") as out:
        proc, url, _ = start_server(
            [sys.executable, "-m", "pman", "serve", "--port", "0", "--workers", "2"],
            env,
            2,
            stdout=out,
        )
        try:
            yield url, stdout, metrics_dir
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_serve_metrics_add_up_every_worker_and_the_tracker(
    served: tuple[str, Path, Path],
) -> None:
    url, stdout, metrics_dir = served
    assert not (metrics_dir / "counter_1.db").exists(), "an earlier run's values were kept"
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {TOKEN}"
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
    before = scrape(url, http)
    body = job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")])
    assert http.post(f"{url}/api/v1/", json=body, timeout=30).status_code == 201

    # each poll on a new connection, until both workers have answered some (which
    # one accepts a connection is the kernel's and the load's choice)
    def poll_lines() -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in stdout.read_text().splitlines() if x.startswith("{")]
        return [r for r in lines if r.get("route") == "/api/v1/{jid}/"]

    polls = 0
    deadline = time.monotonic() + 120
    while True:
        resp = requests.get(
            f"{url}/api/v1/{body['jid']}/",
            headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"},
            timeout=30,
        )
        polls += 1
        assert resp.status_code == 200
        if (
            resp.json()["status"] == "finishedSuccessfully"
            and polls >= 20
            and len({r["pid"] for r in poll_lines()}) == 2
        ):
            break
        assert time.monotonic() < deadline, (resp.json(), {r["pid"] for r in poll_lines()})
        time.sleep(0.05)
    # a worker writes its requests' tally at least every second: then every
    # scrape, whichever worker answers it, has every worker's count
    poll = {"method": "GET", "route": "/api/v1/{jid}/", "code": "200"}

    def polls_counted() -> float:
        s = parse(requests.get(f"{url}/metrics", headers=http.headers, timeout=30).text)
        return value(s, "pman_http_requests_total", **poll) - value(
            before, "pman_http_requests_total", **poll
        )

    deadline = time.monotonic() + 60
    while polls_counted() != polls and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(6):
        s = parse(requests.get(f"{url}/metrics", headers=http.headers, timeout=30).text)
        got = value(s, "pman_http_requests_total", **poll) - value(
            before, "pman_http_requests_total", **poll
        )
        assert got == polls
        count = value(
            s, "pman_http_request_duration_seconds_count", method="GET", route=poll["route"]
        )
        assert (
            count
            - value(
                before,
                "pman_http_request_duration_seconds_count",
                method="GET",
                route=poll["route"],
            )
            >= polls
        )
        assert value(s, "pman_jobs", backend="local", state="succeeded") == 1
        # the tracker process's engine calls and cycles are there too
        assert (
            value(s, "pman_engine_call_duration_seconds_count", backend="local", operation="get")
            >= 1
        )
        assert value(s, "pman_tracker_cycles_total", result="ok") >= 1
        assert ("pman_tracker_lag_seconds",) in s
    # both workers answered polls, and the access log says which request was which
    polled = poll_lines()
    assert len({r["pid"] for r in polled}) == 2
    assert all(r["jid"] == body["jid"] and r["status"] == 200 for r in polled)
    assert TOKEN not in stdout.read_text()


def test_serve_request_id_in_header_and_log(served: tuple[str, Path, Path]) -> None:
    url, stdout, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = requests.get(
        f"{url}/api/v1/", headers={**auth, "X-Request-ID": "pfcon-abc-1"}, timeout=10
    )
    assert resp.headers["X-Request-ID"] == "pfcon-abc-1"
    denied = requests.get(f"{url}/api/v1/", headers={"X-Request-ID": "pfcon-abc-2"}, timeout=10)
    assert denied.status_code == 401 and denied.headers["X-Request-ID"] == "pfcon-abc-2"
    made = requests.get(f"{url}/health", timeout=10).headers["X-Request-ID"]
    assert made and made not in ("pfcon-abc-1", "pfcon-abc-2")
    assert requests.get(f"{url}/api/v1/docs/", timeout=10).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        lines = [json.loads(x) for x in stdout.read_text().splitlines() if x.startswith("{")]
        ids = {r.get("request_id"): r for r in lines}
        if {"pfcon-abc-1", "pfcon-abc-2", made} <= set(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ids["pfcon-abc-1"]["status"] == 200 and ids["pfcon-abc-1"]["logger"] == "pman.access"
    assert ids["pfcon-abc-2"]["status"] == 401
    assert ids[made]["route"] == "/health"
    for r in lines:
        assert {"ts", "level", "logger", "message"} <= set(r)
