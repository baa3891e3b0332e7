"""Helpers shared by unit and integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, Any


def job_body(**overrides: Any) -> dict[str, Any]:
    """A valid v1 job request as pfcon sends it; override any field."""
    body: dict[str, Any] = {
        "jid": f"pman-test-{uuid.uuid4().hex[:10]}",
        "args": ["--prefix", "out-"],
        "args_path_flags": [],
        "auid": "chris",
        "number_of_workers": 1,
        "cpu_limit": 1000,
        "memory_limit": 128,
        "gpu_limit": 0,
        "image": "localhost/pman-test-plugin:latest",
        "entrypoint": ["copyplugin"],
        "type": "ds",
        "env": [],
        "input_dir": "key-1/incoming",
        "output_dir": "key-1/outgoing",
    }
    body.update(overrides)
    return body


def wait_status(
    get: Callable[[str], Any],
    jid: str,
    until: Collection[str],
    timeout: float,
    period: float = 0.1,
) -> Any:
    """Poll ``get(jid)`` (a v1 GET answer) until the job's status is one of
    ``until``; its body. AssertionError with the last body after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        resp = get(jid)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        if data["status"] in until:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"job {jid} still {data['status']} after {timeout} s: {data}")
        time.sleep(period)


def late_memhog(size: str) -> dict[str, list[str]]:
    """The entrypoint and args of a job that runs ``memhog --size SIZE`` after
    two seconds, to be OOM-killed under a smaller memory limit.

    Not at once: Docker's containerd (1.6 on Debian 12) watches a container's
    memory cgroup for OOM kills only once the container has started, so a kill
    in its first moments can go unseen (containerd issues #8180 and #8893,
    fixed by its PR #12405): no "oom" event, State.OOMKilled false, and the job
    looks like a plain SIGKILL. Seen here in 2-3 runs of 50 of the container
    OOM test under load; the kernel's log showed each memcg OOM kill.
    """
    return {"entrypoint": ["sh", "-c", 'sleep 2; exec memhog "$@"', "sh"], "args": ["--size", size]}


def run_in_own_group(
    argv: list[str], timeout: float, grace: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, timeout=...)`` in a
    process group of its own, so that however the call ends early (its own
    timeout, pytest-timeout's, Ctrl-C) nothing it started is left running:
    SIGINT to the command (a Python script runs its finally blocks, which may
    restart what it stopped), up to ``grace`` seconds, then SIGTERM and at last
    SIGKILL to its whole group."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _end_group(proc, grace)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _end_group(proc: subprocess.Popen[str], grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # what it left behind, or all of it if it ignored SIGINT
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


#: what `pman serve` (granian) and gunicorn print once a worker takes requests
WORKER_READY = (
    re.compile(r"granian (\d+): Started worker-\d+"),
    re.compile(r"Booting worker with pid: (\d+)"),
)


def log_text(line: str) -> str:
    """A server's log line as text: a JSON line (PMAN_LOG_FORMAT=json, the
    default in production) as the plain line pman writes in text format."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    return f"{record.get('logger', '')} {record.get('pid', '')}: {record.get('message', '')}"


def start_server(
    argv: list[str],
    env: dict[str, str],
    workers: int,
    timeout: float = 60,
    stdout: IO[str] | None = None,
    new_session: bool = False,
    stderr_copy: Path | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[str], str, set[int]]:
    """Start an HTTP server of pman's (``pman serve`` or gunicorn) bound to port 0:
    returns the process, its URL and its workers' pids once every worker is ready.
    Its stderr is read to the end in the background, so it never blocks on a
    full pipe; its stdout (the access log) goes to ``stdout``, else is inherited.
    ``new_session``: in a process group of its own, for os.killpg.
    ``stderr_copy``: a file that gets the server's stderr, to read after a failure.
    ``cwd``: the folder it starts in."""
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )
    assert proc.stderr is not None
    copy = open(stderr_copy, "a") if stderr_copy is not None else None  # noqa: SIM115
    url = ""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout
    while (not url or len(ready) < workers) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        if copy is not None:
            copy.write(line)
            copy.flush()
        line = log_text(line)
        if m := re.search(r"Listening at: (http://\S+)", line):
            url = m.group(1)
        for pattern in WORKER_READY:
            if m := pattern.search(line):
                ready.add(int(m.group(1)))
    if not url or len(ready) < workers:
        proc.kill()
        raise AssertionError(f"{argv[0]} did not start: url={url!r}, workers ready={ready}")
    threading.Thread(target=_drain, args=(proc.stderr, copy), daemon=True).start()
    # a worker says it started a moment before its socket takes connections
    host, port = url.removeprefix("http://").rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(f"{argv[0]} never took a connection at {url}") from None
            time.sleep(0.05)
    return proc, url, ready


def _drain(stream: IO[str], copy: IO[str] | None) -> None:
    for line in stream:
        if copy is not None:
            copy.write(line)
            copy.flush()
