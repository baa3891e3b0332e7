"""``pman doctor`` as an operator runs it: the console script of this venv, with
the server's environment, against real engines (Docker, Podman, SLURM, the
Kubernetes stand-in, local bubblewrap) and real registries, healthy and
deliberately broken, each problem reported with its fix."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SOCKETS, engine_client, slurm_cluster
from tests.standins.kube.standin import KubeStandin

PMAN = str(Path(sys.executable).with_name("pman"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NAMESPACE = "doctor-jobs"
TOKEN = "doctor-token"


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStandin]:
    engine_client("docker")  # the stand-in's pods are Docker containers
    root = tmp_path_factory.mktemp("kube")
    standin = KubeStandin(token=TOKEN, pvcs={"storebase": root})
    standin.start()
    standin.kubeconfig_path = standin.write_kubeconfig(root / "kubeconfig", NAMESPACE)
    yield standin
    standin.stop()


@pytest.fixture
def rbac(kube: KubeStandin) -> Iterator[KubeStandin]:
    """The stand-in, its rules restored to the default afterwards."""
    kube.rules.reset()
    yield kube
    kube.rules.reset()


@pytest.fixture
def site(tmp_path: Path) -> dict[str, str]:
    """The environment of a pman on this machine: its own folders, SQLite registry."""
    store = tmp_path / "storebase"
    store.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
        "STOREBASE": str(store),
    }


def doctor(env: dict[str, str], *args: str, wrap: list[str] | None = None) -> tuple[int, Any]:
    """Run ``pman doctor --json``; its exit status and its findings."""
    done = subprocess.run(
        [*(wrap or []), PMAN, "doctor", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def rows(findings: list[dict[str, str]], resource: str, check: str) -> list[dict[str, str]]:
    return [f for f in findings if f["resource"] == resource and f["check"] == check]


def only(findings: list[dict[str, str]], resource: str, check: str) -> dict[str, str]:
    found = rows(findings, resource, check)
    assert len(found) == 1, (resource, check, findings)
    return found[0]


def problems(findings: list[dict[str, str]]) -> list[dict[str, str]]:
    return [f for f in findings if f["result"] == "PROBLEM"]


def kube_env(kube: KubeStandin, prefix: str = "") -> dict[str, str]:
    return {
        f"{prefix}CONTAINER_ENV": "kubernetes",
        f"{prefix}KUBECONFIG": str(kube.kubeconfig_path),
        f"{prefix}JOB_NAMESPACE": NAMESPACE,
    }


@pytest.mark.docker
@pytest.mark.podman
@pytest.mark.slurm
@pytest.mark.local
def test_a_healthy_site_of_five_resources(
    site: dict[str, str], rbac: KubeStandin, postgresql_url: str
) -> None:
    engine_client("docker")
    engine_client("podman")
    slurm_cluster()
    env = {
        **site,
        "PMAN_RESOURCES": "dock,pod,hpc,kube,loc",
        "DOCK_CONTAINER_ENV": "docker",
        "DOCK_DOCKER_HOST": SOCKETS["docker"],
        "POD_CONTAINER_ENV": "podman",
        "POD_DOCKER_HOST": SOCKETS["podman"],
        "HPC_CONTAINER_ENV": "slurm",
        "HPC_SLURM_CONTAINER_RUNTIME": "none",
        **kube_env(rbac, "KUBE_"),
        "LOC_CONTAINER_ENV": "local",
        "PMAN_DATABASE_URL": postgresql_url,
    }
    status, findings = doctor(env)
    assert status == 0, problems(findings)
    not_ok = [f for f in findings if f["result"] != "OK"]
    # the one step that is never taken without --submit-test
    assert [(f["resource"], f["check"], f["result"]) for f in not_ok] == [
        ("hpc", "test job", "SKIPPED")
    ]
    resources = {f["resource"] for f in findings}
    assert resources == {"", "dock", "pod", "hpc", "kube", "loc"}
    assert "Podman" in only(findings, "pod", "engine")["detail"]
    assert "Docker engine" in only(findings, "dock", "engine")["detail"]
    assert "UP" in only(findings, "hpc", "controller")["detail"]
    assert "Kubernetes v1.30.0" in only(findings, "kube", "engine")["detail"]
    assert "watch jobs.batch" in only(findings, "kube", "permissions")["detail"]
    assert "bubblewrap" in only(findings, "loc", "engine")["detail"]
    assert "PostgreSQL" in only(findings, "", "registry")["detail"]
    assert "within 2 s" in only(findings, "", "clock")["detail"]
    # a review per permission, and no job submitted anywhere
    posted = [(m, p) for m, p, _ in rbac.requests if m == "POST"]
    assert posted and all(p.endswith("/selfsubjectaccessreviews") for _, p in posted)


@pytest.mark.docker
def test_a_wrong_docker_socket(site: dict[str, str], tmp_path: Path) -> None:
    wrong = tmp_path / "run" / "docker.sock"
    env = {**site, "CONTAINER_ENV": "docker", "DOCKER_HOST": f"unix://{wrong}"}
    status, findings = doctor(env)
    assert status == 1
    sock = only(findings, "default", "socket")
    assert sock["result"] == "PROBLEM"
    assert f"there is no socket at {wrong}" in sock["detail"]
    assert "set DOCKER_HOST to the Docker engine's socket" in sock["fix"]
    assert "/var/run/docker.sock" in sock["fix"]
    assert only(findings, "default", "engine")["result"] == "SKIPPED"
    assert problems(findings) == [sock]


@pytest.mark.docker
def test_an_engine_that_does_not_answer_is_reported_in_time(site: dict[str, str]) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        env = {**site, "CONTAINER_ENV": "docker", "DOCKER_HOST": f"tcp://127.0.0.1:{port}"}
        started = time.monotonic()
        status, findings = doctor(env, "--timeout", "2")
        took = time.monotonic() - started
    assert status == 1
    engine = only(findings, "default", "engine")
    assert engine["result"] == "PROBLEM"
    assert "does not answer" in engine["detail"] or "no answer within" in engine["detail"]
    assert engine["fix"]
    assert took < 60
    assert only(findings, "default", "socket")["result"] == "SKIPPED"  # tcp: no socket file


@pytest.mark.kubernetes
def test_a_missing_rbac_verb(site: dict[str, str], rbac: KubeStandin) -> None:
    rbac.rules.deny("patch", "jobs", "batch")
    rbac.rules.deny("get", "pods/log")
    status, findings = doctor({**site, **kube_env(rbac)})
    assert status == 1
    assert {f["check"] for f in problems(findings)} == {
        "permission patch jobs.batch",
        "permission get pods/log",
    }
    patch = only(findings, "default", "permission patch jobs.batch")
    assert f"pman may not patch jobs.batch in namespace {NAMESPACE!r}" in patch["detail"]
    assert '{apiGroups: ["batch"], resources: ["jobs"], verbs: ["patch"]}' in patch["fix"]
    assert (
        f"kubectl create role pman -n {NAMESPACE} --verb=patch --resource=jobs.batch"
        in (patch["fix"])
    )
    log = only(findings, "default", "permission get pods/log")
    assert '{apiGroups: [""], resources: ["pods/log"], verbs: ["get"]}' in log["fix"]
    assert only(findings, "default", "engine")["result"] == "OK"


@pytest.mark.local
def test_an_unwritable_storebase(site: dict[str, str]) -> None:
    store = site["STOREBASE"]
    env = {**site, "CONTAINER_ENV": "local"}
    if os.geteuid() == 0 and shutil.which("unshare"):
        # root writes through permission bits: a read-only mount of it, in a
        # mount namespace of the doctor's own
        mount = f"mount --bind {store} {store} && mount -o remount,ro,bind {store} {store}"
        wrap = ["unshare", "--mount", "sh", "-c", f'{mount} && exec "$0" "$@"']
        why = "Read-only file system"
    else:
        Path(store).chmod(0o555)
        wrap, why = [], "Permission denied"
    try:
        status, findings = doctor(env, wrap=wrap)
    finally:
        Path(store).chmod(0o755)
    assert status == 1
    found = only(findings, "default", "folder STOREBASE")
    assert found["result"] == "PROBLEM"
    assert found["detail"] == f"STOREBASE={store} is not writable: {why}"
    assert f"make {store} writable by the user pman runs as" in found["fix"]
    assert problems(findings) == [found]


@pytest.mark.sqlite
def test_an_unmigrated_registry(site: dict[str, str], tmp_path: Path) -> None:
    old = tmp_path / "registry-4.0.0.sqlite"
    shutil.copy(FIXTURES / "registry-4.0.0.sqlite", old)
    before = hashlib.sha256(old.read_bytes()).hexdigest()
    env = {**site, "PMAN_DATABASE_URL": f"sqlite:///{old}", "CONTAINER_ENV": "local"}
    status, findings = doctor(env, "--resource", "default")
    assert status == 1
    found = only(findings, "", "registry")
    assert found["result"] == "PROBLEM"
    assert "a registry of pman 4.0.0 or earlier, not migrated" in found["detail"]
    assert "`pman serve`" in found["fix"] and "migrates the registry" in found["fix"]
    assert problems(findings) == [found]
    # the doctor only looked
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before
    # what the fix says: pman migrates it as it starts, and then it is well
    from pman.registry import Registry

    Registry.from_url(f"sqlite:///{old}").close()
    status, findings = doctor(env)
    assert status == 0, problems(findings)
    assert "this pman's" in only(findings, "", "registry")["detail"]


@pytest.mark.docker
@pytest.mark.local
def test_bad_variables_and_what_is_checked_despite_them(site: dict[str, str]) -> None:
    env = {
        **site,
        "PMAN_RESOURCES": "dock,loc",
        "DOCK_CONTAINER_ENV": "docker",
        "DOCK_JOB_LOGS_TAIL": "many",
        "LOC_CONTAINER_ENV": "local",
        "PMAN_ENGINE_TIMEOUT": "-1",
    }
    status, findings = doctor(env)
    assert status == 1
    bad = problems(findings)
    assert [(f["resource"], f["check"]) for f in bad] == [
        ("dock", "configuration"),
        ("", "configuration"),
    ]
    tail, timeout = bad
    assert tail["detail"].startswith("DOCK_JOB_LOGS_TAIL: resource 'dock': Not a valid integer")
    assert tail["fix"].startswith("set DOCK_JOB_LOGS_TAIL to")
    assert "log lines returned with a job's status" in tail["fix"]
    assert "default: 1000" in tail["fix"]
    assert timeout["detail"].startswith("PMAN_ENGINE_TIMEOUT: Must be greater than or equal to")
    # the broken resource is not checked, the other one and the registry are
    assert only(findings, "dock", "engine")["result"] == "SKIPPED"
    assert only(findings, "loc", "engine")["result"] == "OK"
    assert only(findings, "", "registry")["result"] == "OK"


@pytest.mark.slurm
def test_submit_test_proves_a_node_sees_the_folders(site: dict[str, str], tmp_path: Path) -> None:
    slurm_cluster()
    job_dir = tmp_path / "slurm-jobs"
    env = {
        **site,
        "CONTAINER_ENV": "slurm",
        "SLURM_CONTAINER_RUNTIME": "none",
        "SLURM_JOB_DIR": str(job_dir),
    }
    status, findings = doctor(env, "--submit-test")
    assert status == 0, problems(findings)
    found = only(findings, "default", "test job")
    assert found["result"] == "OK"
    assert (
        "read and wrote SLURM_JOB_DIR and STOREBASE at the same paths as pman" in (found["detail"])
    )
    job_id = found["detail"].split()[2]
    # it cleaned up after itself: no file left, the job is not queued nor running
    assert list(job_dir.iterdir()) == []
    assert list(Path(site["STOREBASE"]).iterdir()) == []
    state = subprocess.run(
        ["squeue", "-h", "-t", "all", f"--jobs={job_id}", "-o", "%T"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    assert state in ("", "COMPLETED", "COMPLETING", "CANCELLED"), state


@pytest.mark.local
def test_the_table_and_the_json_shape(site: dict[str, str]) -> None:
    env = {**site, "CONTAINER_ENV": "local"}
    status, findings = doctor(env)
    assert status == 0
    assert isinstance(findings, list) and findings
    for finding in findings:
        assert list(finding) == ["resource", "check", "result", "detail", "fix"]
        assert finding["result"] in ("OK", "PROBLEM", "SKIPPED")
        assert all(isinstance(v, str) for v in finding.values())
    assert [f["check"] for f in findings] == [
        "configuration",
        "engine",
        "folder PMAN_DATA_DIR",
        "folder STOREBASE",
        "registry",
        "clock",
    ]
    table = subprocess.run(
        [PMAN, "doctor"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["RESOURCE", "CHECK", "RESULT", "DETAIL"]
    assert lines[-1] == "0 problems, 5 OK, 1 skipped"
    unknown = subprocess.run(
        [PMAN, "doctor", "--resource", "nope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2
    assert "no resource named 'nope' (resources: default)" in unknown.stderr
