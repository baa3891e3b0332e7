"""Real engines behind a real HTTP server.

Each test gets a pman server on 127.0.0.1 (port 0, read back) with its own
STOREBASE. When an engine is missing the test skips on a laptop and FAILS when
engines are required (PMAN_REQUIRE_ENGINES=1, or CI=true).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
import sqlalchemy.exc
from sqlalchemy import create_engine, make_url
from werkzeug.serving import make_server

from pman.app import create_app
from pman.errors import JobNotFound
from pman.settings import load_settings
from tests.helpers import job_body, wait_status

REQUIRE_ENGINES = (
    os.environ.get("PMAN_REQUIRE_ENGINES", "").lower() in ("1", "true", "yes")
    or os.environ.get("CI", "").lower() == "true"
)
SOCKETS = {
    "docker": os.environ.get("PMAN_TEST_DOCKER_HOST", "unix:///var/run/docker.sock"),
    "podman": os.environ.get("PMAN_TEST_PODMAN_HOST", "unix:///run/podman/podman.sock"),
}
# the swarm backend talks to the same Docker engine, which must be a swarm manager
SOCKETS["swarm"] = SOCKETS["docker"]
TEST_IMAGE = os.environ.get("PMAN_TEST_IMAGE", "localhost/pman-test-plugin:latest")
PLUGIN_BIN = Path(__file__).resolve().parents[1] / "images" / "plugin" / "bin"
FINISHED = ("finishedSuccessfully", "finishedWithError")


def engine_missing(reason: str) -> None:
    """Skip on a developer's machine; fail when the run requires engines."""
    if REQUIRE_ENGINES:
        pytest.fail(f"required engine missing: {reason}", pytrace=False)
    pytest.skip(reason)


_engine_checked: dict[str, docker.APIClient] = {}


def engine_client(name: str) -> docker.APIClient:
    if name in _engine_checked:
        return _engine_checked[name]
    url = SOCKETS[name]
    try:
        api = docker.APIClient(base_url=url, version="1.41", timeout=30)
        api.ping()
    except Exception as e:
        engine_missing(f"{name} does not answer at {url} ({e}); run scripts/engines-up.sh")
    try:
        api.inspect_image(TEST_IMAGE)
    except docker.errors.NotFound:
        engine_missing(f"{name} lacks {TEST_IMAGE}; run scripts/build-test-images.sh")
    if name == "swarm":
        swarm = api.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            engine_missing(
                f"the Docker engine at {url} is not a swarm manager "
                f"(Swarm.LocalNodeState={swarm.get('LocalNodeState')!r}); run scripts/swarm-up.sh"
            )
    _engine_checked[name] = api
    return api


_slurm_checked: list[bool] = []


def slurm_cluster() -> None:
    """The test SLURM cluster answers (scripts/slurm-up.sh starts one)."""
    if _slurm_checked:
        return
    try:
        out = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=30, check=False
        )
        answer = (out.stdout + out.stderr).strip()
        up = out.returncode == 0 and "UP" in out.stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        answer, up = str(e), False
    if not up:
        engine_missing(
            f"no SLURM cluster answers `scontrol ping` ({answer}); run scripts/slurm-up.sh"
        )
    _slurm_checked.append(True)


@dataclass
class Pman:
    """A running pman and the engine under it."""

    url: str
    backend: str
    storebase: Path
    engine: docker.APIClient | None
    app: Any = None
    server: Any = None
    jids: list[str] = field(default_factory=list)
    #: SLURM_CONTAINER_RUNTIME of a slurm pman
    runtime: str = ""

    def body(self, plugin: str = "copyplugin", **overrides: Any) -> dict[str, Any]:
        on_host = self.backend == "local" or (self.backend == "slurm" and self.runtime == "none")
        entry = [str(PLUGIN_BIN / plugin)] if on_host else [plugin]
        b = job_body(**{"entrypoint": entry, "image": TEST_IMAGE, **overrides})
        self.jids.append(b["jid"].lstrip("/"))
        return b

    def post(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/api/v1/", json=body, timeout=60)

    def get(self, jid: str) -> requests.Response:
        return requests.get(f"{self.url}/api/v1/{jid}/", timeout=60)

    def delete(self, jid: str) -> requests.Response:
        return requests.delete(f"{self.url}/api/v1/{jid}/", timeout=60)

    def wait(self, jid: str, until: tuple[str, ...] = FINISHED, timeout: float = 60) -> Any:
        return wait_status(self.get, jid, until, timeout)

    def container(self, jid: str) -> dict[str, Any] | None:
        """The engine's own view of the job's container, None if there is none."""
        assert self.engine is not None
        try:
            return self.engine.inspect_container(jid)
        except docker.errors.NotFound:
            return None

    def out(self, body: dict[str, Any]) -> Path:
        return self.storebase / body["output_dir"]

    @property
    def service(self) -> Any:
        return self.app.extensions["pman"].service

    def record(self, jid: str) -> Any:
        """The registry's record, read without an HTTP poll."""
        return self.service.registry.active(jid)

    def wait_record(self, jid: str, timeout: float = 60) -> Any:
        """Wait for the tracker alone (no GET) to see the job finish."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                rec = self.record(jid)
            except JobNotFound:  # not adopted yet
                rec = None
            if rec is not None and rec.state.finished:
                return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"tracker never saw {jid} finish: {rec}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop serving and tracking, as a pman process that ends."""
        self.server.shutdown()
        self.service.tracker.stop()


def _serve(app: Any) -> tuple[Any, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


#: each test of the pman, cpman and backend fixtures is marked with its engine
#: by tests/conftest.py (from the parameter), not here
BACKENDS = ["local", "docker", "podman"]
CONTAINER_BACKENDS = BACKENDS[1:]


@pytest.fixture
def make_pman(tmp_path: Path) -> Iterator[Callable[..., Pman]]:
    """make_pman(backend, **ENV) -> a running pman; all its jobs are removed afterwards."""
    started: list[tuple[Any, Pman]] = []

    def make(backend: str, storebase: Path | None = None, **env: str) -> Pman:
        """A new pman; pass the storebase of an earlier one to share its data and registry."""
        engine = engine_client(backend) if backend in SOCKETS else None
        if backend == "slurm":
            slurm_cluster()
            # the docker runtime's containers run on this node's Docker engine
            if env.get("SLURM_CONTAINER_RUNTIME") == "docker":
                engine = engine_client("docker")
        if storebase is None:
            storebase = tmp_path / f"storebase-{uuid.uuid4().hex[:6]}"
            (storebase / "key-1" / "incoming").mkdir(parents=True)
            (storebase / "key-1" / "incoming" / "data.txt").write_text("some data\n")
        environ = {
            # authentication has its own tests (tests/unit/api/test_auth.py, test_serve.py)
            "PMAN_AUTH": "none",
            "CONTAINER_ENV": backend,
            "STOREBASE": str(storebase),
            "PMAN_DATA_DIR": str(storebase.with_name(storebase.name + "-data")),
            **({"DOCKER_HOST": SOCKETS[backend]} if backend in SOCKETS else {}),
            **env,
        }
        app = create_app(load_settings(environ))
        server, url = _serve(app)
        p = Pman(
            url,
            backend,
            storebase,
            engine,
            app=app,
            server=server,
            runtime=environ.get("SLURM_CONTAINER_RUNTIME", ""),
        )
        started.append((server, p))
        return p

    yield make
    for server, p in reversed(started):
        for jid in p.jids:
            with contextlib.suppress(Exception):
                p.service.backend.delete(jid)
            if p.engine is not None:
                with contextlib.suppress(docker.errors.NotFound):
                    p.engine.remove_container(jid, force=True)
        server.shutdown()
        p.service.tracker.stop()


@pytest.fixture(params=BACKENDS)
def pman(request: pytest.FixtureRequest, make_pman: Callable[..., Pman]) -> Pman:
    return make_pman(request.param)


@pytest.fixture(params=CONTAINER_BACKENDS)
def cpman(request: pytest.FixtureRequest, make_pman: Callable[..., Pman]) -> Pman:
    return make_pman(request.param)


@pytest.fixture(params=CONTAINER_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of a container backend, for tests that build their own pman."""
    return request.param


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own on the server of
    PMAN_TEST_DATABASE_URL, dropped at the end. Its tables and its advisory
    locks (the tracker's leader lock is one per database) are nobody else's:
    another test run on the same server (or another pytest-xdist worker)
    neither drops the tables under a test nor holds the leader lock its
    tracker waits for. Where the role may not create databases
    (scripts/postgres-up.sh grants it), the shared database is used as before.
    """
    url = os.environ.get("PMAN_TEST_DATABASE_URL", "")
    if not url:
        engine_missing("PMAN_TEST_DATABASE_URL is not set; run scripts/postgres-up.sh")
    shared = make_url(url)
    name = f"{shared.database}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(shared, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.ProgrammingError as e:
        admin.dispose()
        warnings.warn(
            f"PostgreSQL tests share {shared.database!r} (cannot create a database: {e.orig})",
            stacklevel=1,
        )
        yield url
        return
    try:
        yield shared.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
