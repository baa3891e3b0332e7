"""Work that may wait never starves work that must not (pman.api.lanes).

Through ``pman serve`` (granian, RSGI) as deployed: open log streams, slow
request bodies and an engine that hangs each hold everything they may hold,
and polls of a finished job still answer; what is over a bound is refused at
once; a POST the engine does not answer in time is 503 and leaves nothing
behind once the engine wakes up. The tests of streams and bodies run through
the ASGI application too (``pman.asgi:application`` under granian's ASGI
interface), which shares the lanes (pman.api.bridge). Under ``gunicorn
pman.wsgi:application``, the bounds hold too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import pytest
import requests

from tests.helpers import job_body, start_server
from tests.integration.conftest import SOCKETS, TEST_IMAGE, engine_client
from tests.stall import StallableProxy

TOKEN = secrets.token_hex(32)
OTHER_TOKEN = secrets.token_hex(32)
FINISHED = ("finishedSuccessfully", "finishedWithError")


def _session(token: str = TOKEN) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


class Served:
    def __init__(
        self, url: str, storebase: Path, proc: subprocess.Popen[str], workers: set[int]
    ) -> None:
        self.url = url
        self.storebase = storebase
        self.proc = proc
        self.workers = workers
        self.http = _session()
        self.jids: list[str] = []

    def submit(self, script: str, **overrides: Any) -> dict[str, Any]:
        body = job_body(
            entrypoint=["sh", "-c", script, "job"],
            args=[],
            output_dir=f"key-1/out-{uuid.uuid4().hex[:8]}",
            **overrides,
        )
        self.jids.append(body["jid"])
        resp = self.http.post(f"{self.url}/api/v1/", json=body, timeout=60)
        assert resp.status_code == 201, resp.text
        return body

    def wait(self, jid: str, until: tuple[str, ...] = FINISHED, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            data = self.http.get(f"{self.url}/api/v1/{jid}/", timeout=30).json()
            if data["status"] in until:
                return data
            assert time.monotonic() < deadline, f"{jid} still {data['status']}"
            time.sleep(0.1)

    def stream(self, jid: str, token: str = TOKEN) -> requests.Response:
        return requests.get(
            f"{self.url}/api/v1/{jid}/logs/?follow=true",
            headers={"Authorization": f"Bearer {token}"},
            stream=True,
            timeout=60,
        )


#: granian serving pman's ASGI application, as an operator would run it
#: (pman serve's own log format, so that start_server sees its lines)
ASGI_SERVER = """
import sys
from granian.constants import Interfaces
from granian.server import Server
from pman.__main__ import _granian_logging
Server(
    "pman.asgi:application",
    address="127.0.0.1",
    port=int(sys.argv[1]),
    interface=Interfaces.ASGI,
    workers=1,
    log_dictconfig=_granian_logging("text"),
    log_access=False,
).serve()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """serve(gunicorn=False, asgi=False, **ENV) -> a pman served as deployed,
    1 worker (``pman serve``; gunicorn's gthread worker; or the ASGI
    application under granian)."""
    served: list[Served] = []

    def start(gunicorn: bool = False, asgi: bool = False, **extra: str) -> Served:
        storebase = tmp_path / f"storebase-{uuid.uuid4().hex[:6]}"
        (storebase / "key-1" / "incoming").mkdir(parents=True)
        (storebase / "key-1" / "incoming" / "data.txt").write_text("data\n")
        env = {
            **os.environ,
            "CONTAINER_ENV": "local",
            "STOREBASE": str(storebase),
            "PMAN_DATA_DIR": str(storebase.with_name(storebase.name + "-data")),
            "PMAN_AUTH_TOKENS": f"{TOKEN},{OTHER_TOKEN}",
            "PMAN_ACCESS_LOG": "no",
            **extra,
        }
        bin_dir = Path(sys.executable).parent
        if gunicorn:
            argv = [
                str(bin_dir / "gunicorn"),
                "--bind",
                "127.0.0.1:0",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                extra.get("GUNICORN_THREADS", "8"),
                "pman.wsgi:application",
            ]
        elif asgi:
            metrics_dir = tmp_path / f"metrics-{uuid.uuid4().hex[:6]}"
            metrics_dir.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            argv = [sys.executable, "-c", ASGI_SERVER, str(_free_port())]
        else:
            argv = [str(bin_dir / "pman"), "serve", "--port", "0", "--workers", "1"]
        proc, url, workers = start_server(
            argv, env, 1, new_session=True, stderr_copy=tmp_path / "server.log"
        )
        served.append(Served(url, storebase, proc, workers))
        return served[-1]

    yield start
    for pman in served:
        for jid in pman.jids:  # no job outlives its test
            with contextlib.suppress(requests.RequestException):
                pman.http.delete(f"{pman.url}/api/v1/{jid}/", timeout=30)
        pman.proc.send_signal(signal.SIGTERM)
        try:
            pman.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pman.proc.pid, signal.SIGKILL)  # its workers and tracker too
            pman.proc.wait()


pytestmark = pytest.mark.local

#: pman serve's interface (RSGI), and the ASGI application under granian
INTERFACES = pytest.mark.parametrize("asgi", [False, True], ids=["rsgi", "asgi"])


@INTERFACES
def test_open_streams_do_not_stop_polls_and_one_more_is_refused_at_once(
    serve: Callable[..., Served], asgi: bool
) -> None:
    pman = serve(
        asgi=asgi,
        PMAN_THREADS="2",
        PMAN_MAX_LOG_STREAMS="16",
        PMAN_MAX_LOG_STREAMS_PER_CLIENT="12",
    )
    done = pman.submit("echo finished-work")
    pman.wait(done["jid"])
    silent = pman.submit("sleep 120")
    pman.wait(silent["jid"], until=("started",))

    # one client with 12 streams open on a job that writes nothing (the
    # report's case), then another client up to the process's cap of 16
    streams = [pman.stream(silent["jid"]) for _ in range(12)]
    assert [s.status_code for s in streams] == [200] * 12
    more = pman.stream(silent["jid"])
    assert more.status_code == 429, more.text
    assert more.headers["Retry-After"] == "1"
    assert "PMAN_MAX_LOG_STREAMS_PER_CLIENT" in more.json()["message"]
    streams += [pman.stream(silent["jid"], OTHER_TOKEN) for _ in range(4)]
    assert [s.status_code for s in streams[12:]] == [200] * 4
    full = pman.stream(silent["jid"], OTHER_TOKEN)
    assert full.status_code == 429
    assert "PMAN_MAX_LOG_STREAMS" in full.json()["message"]

    scrape = pman.http.get(f"{pman.url}/metrics", timeout=10).text
    assert 'pman_refused_requests_total{code="429",lane="stream"} 2.0' in scrape
    assert "pman_log_streams_open 16.0" in scrape
    # every stream thread is taken, and polls, listing and health still answer
    for _ in range(20):
        poll = pman.http.get(f"{pman.url}/api/v1/{done['jid']}/", timeout=10)
        assert poll.status_code == 200 and poll.json()["status"] == "finishedSuccessfully"
    assert pman.http.get(f"{pman.url}/api/v1/jobs/", timeout=10).status_code == 200
    assert requests.get(f"{pman.url}/health", timeout=10).status_code == 200
    # and an engine request too (its own lane)
    third = pman.submit("echo third")
    assert pman.wait(third["jid"])["status"] == "finishedSuccessfully"

    # a client that goes away gives its stream back, though the job is silent
    for s in streams[:4]:
        s.close()
    deadline = time.monotonic() + 30
    while (again := pman.stream(silent["jid"])).status_code == 429:
        again.close()
        assert time.monotonic() < deadline, "closed streams were never given back"
        time.sleep(0.2)
    assert again.status_code == 200
    again.close()
    for s in streams[4:]:
        s.close()


@INTERFACES
def test_a_stream_of_a_silent_job_ends_with_the_job_or_when_idle(
    serve: Callable[..., Served], asgi: bool
) -> None:
    pman = serve(asgi=asgi, PMAN_LOG_STREAM_IDLE_TIMEOUT="2")
    # writes, then nothing for longer than the idle limit: ended by pman
    idle = pman.submit("echo one; sleep 120; echo never")
    pman.wait(idle["jid"], until=("started",))
    with pman.stream(idle["jid"]) as resp:
        assert resp.status_code == 200
        got = b"".join(resp.iter_content(None))  # returns only once the response ends
    assert got == b"one\n"
    assert pman.http.get(f"{pman.url}/api/v1/{idle['jid']}/", timeout=10).json()["status"] == (
        "started"
    )
    # silent but shorter than the limit, between its lines: ends with the job
    short = pman.submit("sleep 1; echo a; sleep 1; echo b")
    with pman.stream(short["jid"]) as resp:
        got = b"".join(resp.iter_content(None))
    assert got == b"a\nb\n"
    assert pman.wait(short["jid"])["status"] == "finishedSuccessfully"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for entry in f:
            if entry.startswith("VmRSS:"):
                return int(entry.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@INTERFACES
@pytest.mark.timeout(600)  # the 50 MiB log takes a while to write
def test_a_client_that_reads_slowly_holds_its_stream_back(
    serve: Callable[..., Served], asgi: bool
) -> None:
    """A client that stops reading a long log makes pman stop reading it too:
    the worker does not hold the rest (granian's ASGI send waits; its RSGI
    transport does not, so pman waits on the client's TCP acknowledgements)."""
    pman = serve(asgi=asgi)
    line = "x" * 1023
    big = pman.submit(f"i=0; while [ $i -lt 51200 ]; do echo {line}; i=$((i+1)); done")
    pman.wait(big["jid"], timeout=300)
    [worker] = pman.workers
    host = urlparse(pman.url)
    with socket.create_connection((host.hostname, host.port), timeout=60) as s:
        before = _rss(worker)
        s.sendall(
            (
                f"GET /api/v1/{big['jid']}/logs/ HTTP/1.1\r\nHost: {host.netloc}\r\n"
                f"Authorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
        )
        received = s.recv(65536)
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        # the client reads nothing more for a while: the kernel's buffers fill,
        # and pman holds back the other ~40 MiB of the log
        time.sleep(3)
        grown = _rss(worker) - before
        assert grown < 20 << 20, f"the worker grew by {grown >> 20} MiB"
        # then it reads the rest: all of the log, then the final chunk
        total = len(received)
        tail = received[-5:]
        while chunk := s.recv(1 << 20):
            total += len(chunk)
            tail = (tail + chunk)[-5:]
            if tail == b"0\r\n\r\n":
                break
        assert tail == b"0\r\n\r\n"
        assert total > 51200 * 1024


@INTERFACES
def test_a_server_told_to_stop_ends_its_streams(serve: Callable[..., Served], asgi: bool) -> None:
    """SIGTERM: the server waits for open responses before it stops, and the
    stream of a silent job would not end before the job does."""
    pman = serve(asgi=asgi)
    silent = pman.submit("sleep 20")
    pman.wait(silent["jid"], until=("started",))
    stream = pman.stream(silent["jid"])
    assert stream.status_code == 200
    asked = time.monotonic()
    pman.proc.send_signal(signal.SIGTERM)
    assert b"".join(stream.iter_content(None)) == b""  # ended, without the job
    pman.proc.wait(timeout=30)
    assert time.monotonic() - asked < 10


def _trickle(url: str, path: str, n: int) -> list[socket.socket]:
    """n connections that announce a 100 kB body and send 10 bytes of it."""
    host = urlparse(url)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host.hostname, host.port), timeout=60)
        s.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host.netloc}\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                'Content-Length: 100000\r\n\r\n{"jid": "x'
            ).encode()
        )
        socks.append(s)
    return socks


@INTERFACES
def test_slow_bodies_hold_no_thread_and_time_out_on_their_own(
    serve: Callable[..., Served], asgi: bool
) -> None:
    pman = serve(asgi=asgi, PMAN_THREADS="2", PMAN_MAX_ENGINE_CALLS="2", PMAN_BODY_TIMEOUT="3")
    done = pman.submit("echo finished-work")
    pman.wait(done["jid"])
    socks = _trickle(pman.url, "/api/v1/", 40)
    try:
        for _ in range(20):
            poll = pman.http.get(f"{pman.url}/api/v1/{done['jid']}/", timeout=10)
            assert poll.status_code == 200
        # engine requests are not held up by them either
        other = pman.submit("echo other")
        assert pman.wait(other["jid"])["status"] == "finishedSuccessfully"
        # each is answered 408 by its own deadline, and closed
        for s in socks:
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"PMAN_BODY_TIMEOUT" in answer
    finally:
        for s in socks:
            s.close()


@pytest.mark.docker
def test_a_stalled_engine_holds_only_engine_requests_and_leaves_nothing_behind(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    engine = engine_client("docker")
    proxy = StallableProxy(tmp_path / "stall.sock", SOCKETS["docker"].removeprefix("unix://"))
    timeout = 8.0
    pman = serve(
        CONTAINER_ENV="docker",
        DOCKER_HOST=proxy.url,
        PMAN_ENGINE_TIMEOUT=str(timeout),
        PMAN_MAX_ENGINE_CALLS="3",
        PMAN_THREADS="2",
    )
    bodies: list[dict[str, Any]] = []
    try:
        done = job_body(image=TEST_IMAGE, output_dir="key-1/out-done")
        assert pman.http.post(f"{pman.url}/api/v1/", json=done, timeout=60).status_code == 201
        pman.wait(done["jid"])

        proxy.pause()
        bodies = [job_body(image=TEST_IMAGE, output_dir=f"key-1/out-{i}") for i in range(10)]

        def post(body: dict[str, Any]) -> tuple[int, float]:
            t0 = time.monotonic()
            resp = _session().post(f"{pman.url}/api/v1/", json=body, timeout=60)
            return resp.status_code, time.monotonic() - t0

        with ThreadPoolExecutor(len(bodies)) as pool:
            posts = [pool.submit(post, b) for b in bodies]
            # while every engine slot waits on the engine: polls answer from
            # the registry, health says the engine does not answer
            for _ in range(10):
                poll = pman.http.get(f"{pman.url}/api/v1/{done['jid']}/", timeout=10)
                assert poll.status_code == 200
                assert poll.json()["status"] == "finishedSuccessfully"
            assert not all(p.done() for p in posts), "the POSTs did not wait on the engine"
            health = requests.get(f"{pman.url}/health", timeout=30)
            assert health.status_code == 503
            answers = [p.result() for p in posts]
        # each answered 503 by its deadline, not after those ahead of it
        assert [status for status, _ in answers] == [503] * len(bodies)
        assert max(took for _, took in answers) < 2 * timeout, answers

        # the engine wakes up and carries out what it was sent meanwhile:
        # pman removes every container its refused POSTs made
        proxy.resume()
        deadline = time.monotonic() + 120
        while any(_container(engine, b["jid"]) for b in bodies):
            assert time.monotonic() < deadline, "a refused POST left a container behind"
            time.sleep(0.5)
        # nor an output folder (Docker makes a missing bind source when it
        # creates a container late; the tracker removes it with the record)
        while any((pman.storebase / b["output_dir"]).exists() for b in bodies):
            assert time.monotonic() < deadline, "a refused POST left its output folder"
            time.sleep(0.5)
        # and the same POSTs again run each job, once
        for b in bodies:
            while (
                resp := pman.http.post(f"{pman.url}/api/v1/", json=b, timeout=60)
            ).status_code == 503:
                assert time.monotonic() < deadline, resp.text
                time.sleep(float(resp.headers.get("Retry-After", "1")))
            assert resp.status_code == 201, resp.text
        for b in bodies:
            assert pman.wait(b["jid"])["status"] == "finishedSuccessfully"
            assert (pman.storebase / b["output_dir"] / "out-data.txt").read_text() == "data\n"
        # one container per job: none of the refused attempts survived beside it
        names = [c["Names"][0].lstrip("/") for c in engine.containers(all=True)]
        assert sorted(n for n in names if n in {b["jid"] for b in bodies}) == sorted(
            b["jid"] for b in bodies
        )
    finally:
        proxy.resume()
        for b in [*bodies, done]:
            # 409: the tracker is removing it already
            with contextlib.suppress(docker.errors.APIError):
                engine.remove_container(b["jid"], force=True)
        proxy.close()


def _container(engine: docker.APIClient, name: str) -> bool:
    try:
        engine.inspect_container(name)
    except docker.errors.NotFound:
        return False
    return True


def test_under_gunicorn_streams_are_capped_and_polls_answer(
    serve: Callable[..., Served],
) -> None:
    # gthread with 8 threads: 4 streams + 2 engine calls at most, 2 left for polls
    pman = serve(
        gunicorn=True,
        GUNICORN_THREADS="8",
        PMAN_MAX_LOG_STREAMS="4",
        PMAN_MAX_ENGINE_CALLS="2",
        PMAN_LOG_STREAM_IDLE_TIMEOUT="600",
    )
    done = pman.submit("echo finished-work")
    pman.wait(done["jid"])
    silent = pman.submit("sleep 120")
    pman.wait(silent["jid"], until=("started",))
    streams = [pman.stream(silent["jid"]) for _ in range(4)]
    assert [s.status_code for s in streams] == [200] * 4
    refused = pman.stream(silent["jid"])
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    for _ in range(10):
        poll = pman.http.get(f"{pman.url}/api/v1/{done['jid']}/", timeout=10)
        assert poll.status_code == 200
    # WSGI notices a client that left only when it writes to it: the streams
    # end with their job
    assert pman.http.post(f"{pman.url}/api/v1/{silent['jid']}/cancel/", timeout=30).ok
    for s in streams:
        assert b"".join(s.iter_content(None)) == b""
        s.close()
