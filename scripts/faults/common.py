"""What the fault scripts share: a `pman serve` of their own, its client, the
Docker engine's state and its restart.

Every script starts pman with ``PMAN_AUTH_TOKENS`` set to a random token and
sends it as a bearer token on every request, talks to 127.0.0.1 only, bounds
every loop in count and time, and leaves no container of its pman instance
behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import job_body, start_server  # noqa: E402

DOCKER_SOCK = "unix:///var/run/docker.sock"
IMAGE = os.environ.get("PMAN_TEST_IMAGE", "localhost/pman-test-plugin:latest")
LABEL_INSTANCE = "org.chrisproject.pman.instance"
FINISHED = ("finishedSuccessfully", "finishedWithError")


class Violation(AssertionError):
    """An invariant the fault broke: the script exits non-zero."""


def check(ok: bool, what: str, violations: list[str]) -> None:
    if not ok:
        violations.append(what)
        print(f"VIOLATION: {what}", file=sys.stderr, flush=True)


@dataclass
class Pman:
    """A `pman serve` subprocess of a script, in a process group of its own."""

    proc: subprocess.Popen[str]
    url: str
    token: str
    data_dir: Path
    storebase: Path
    workers: set[int]
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, **kwargs)

    def post(self, body: dict[str, Any], timeout: float = 60) -> requests.Response:
        return self.request("POST", "/api/v1/", json=body, timeout=timeout)

    def get(self, jid: str) -> requests.Response:
        return self.request("GET", f"/api/v1/{jid}/")

    def delete(self, jid: str) -> requests.Response:
        return self.request("DELETE", f"/api/v1/{jid}/")

    def jobs(self, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Every record of the registry (bounded: 50 pages of 500)."""
        out: list[dict[str, Any]] = []
        cursor = None
        for _ in range(50):
            params: dict[str, Any] = {"limit": 500, "include_deleted": str(include_deleted)}
            if cursor:
                params["cursor"] = cursor
            page = self.request("GET", "/api/v1/jobs/", params=params).json()
            out += page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        return out

    def pids(self) -> list[int]:
        """pman serve, its workers and its tracker process."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def new_dirs(prefix: str) -> tuple[Path, Path]:
    """A fresh STOREBASE (with key-1/incoming/data.txt) and PMAN_DATA_DIR."""
    base = Path(tempfile.mkdtemp(prefix=f"pman-{prefix}-"))
    storebase = base / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("fault\n")
    return storebase, base / "data"


def start_pman(
    storebase: Path,
    data_dir: Path,
    backend: str = "docker",
    workers: int = 2,
    token: str | None = None,
    **env: str,
) -> Pman:
    """`python -m pman serve` on 127.0.0.1, port 0, in a new process group."""
    token = token or secrets.token_hex(16)
    environ = {
        **os.environ,
        "CONTAINER_ENV": backend,
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(data_dir),
        "PMAN_AUTH_TOKENS": token,
        "PMAN_ACCESS_LOG": "no",
        "PMAN_LOG_LEVEL": os.environ.get("PMAN_LOG_LEVEL", "WARNING"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        **({"DOCKER_HOST": DOCKER_SOCK} if backend == "docker" else {}),
        **env,
    }
    argv = [sys.executable, "-m", "pman", "serve", "--port", "0", "--workers", str(workers)]
    proc, url, ready = start_server(argv, environ, workers, timeout=60, new_session=True)
    return Pman(proc, url, token, data_dir, storebase, ready)


def body(plugin: str = "copyplugin", args: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    """A job request for the test image, with its own output folder."""
    jid = kw.pop("jid", f"pman-fault-{uuid.uuid4().hex[:10]}")
    return job_body(
        jid=jid,
        image=IMAGE,
        entrypoint=[plugin],
        args=args if args is not None else [],
        output_dir=f"key-1/out-{jid}",
        **kw,
    )


def wait_until(
    what: str, predicate: Callable[[], bool], timeout: float, step: float = 0.2
) -> float:
    """Seconds it took ``predicate`` to hold; Violation after ``timeout``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise Violation(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


# ---------------------------------------------------------------- docker
def engine() -> docker.APIClient:
    return docker.APIClient(base_url=DOCKER_SOCK, version="1.41", timeout=10)


def docker_answers() -> bool:
    try:
        engine().ping()
        return True
    except Exception:
        return False


def dockerd_pid() -> int | None:
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def stop_dockerd(sig: int = signal.SIGTERM, timeout: float = 60) -> float:
    """Kill dockerd with ``sig``; seconds until it is gone."""
    pid = dockerd_pid()
    if pid is None:
        raise Violation("no dockerd to stop")
    started = time.monotonic()
    os.kill(pid, sig)
    wait_until("dockerd exits", lambda: not Path(f"/proc/{pid}").exists(), timeout)
    return time.monotonic() - started


def start_dockerd(timeout: float = 120) -> float:
    """scripts/engines-up.sh (idempotent: starts dockerd if it does not answer)."""
    started = time.monotonic()
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "engines-up.sh")],
        check=False,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until("dockerd answers", docker_answers, 30)
    return time.monotonic() - started


def containers_of(instance: str) -> list[dict[str, Any]]:
    return engine().containers(all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"})


def remove_containers_of(instance: str) -> int:
    api = engine()
    found = containers_of(instance)
    for c in found:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            api.remove_container(c["Id"], force=True)
    return len(found)


def instance_of(p: Pman) -> str:
    info = p.request("GET", "/api/v1/jobs/", params={"limit": 1, "include_deleted": "true"})
    jobs = info.json()["jobs"]
    if jobs and "org.chrisproject.pman.instance" in jobs[0]["labels"]:
        return str(jobs[0]["labels"]["org.chrisproject.pman.instance"])
    # as pman names it by default: a digest of its registry's URL
    import hashlib

    url = f"sqlite:///{p.data_dir}/pman.db"
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def expected_status(container: dict[str, Any] | None) -> str:
    """What pman must say of a finished job, from Docker's own inspect."""
    if container is None:
        return "finishedWithError"  # vanished
    state = container["State"]
    if state["Status"] == "created":
        # created, never started: pman stopped between its create and start
        # calls; Docker will never run it, and pman must say so after a minute
        created = datetime.fromisoformat(container["Created"][:26].rstrip("Z") + "+00:00")
        if (datetime.now(UTC) - created).total_seconds() > 60:
            return "finishedWithError"
    if state["Status"] in ("created", "running", "restarting", "paused"):
        return "started"
    return "finishedSuccessfully" if state["ExitCode"] == 0 else "finishedWithError"


def inspect(name: str) -> dict[str, Any] | None:
    try:
        return engine().inspect_container(name)
    except docker.errors.NotFound:
        return None


def report(figures: dict[str, Any], violations: list[str]) -> int:
    figures["violations"] = violations
    figures["ok"] = not violations
    print(json.dumps(figures, indent=2, sort_keys=False), flush=True)
    return 0 if not violations else 1
