"""One ``pman serve`` process serving five compute resources at once (issue 15),
each on a real engine: local (bubblewrap), Podman, Kubernetes (the stand-in,
declaring GPUs), Docker and SLURM, each with a STOREBASE of its own.

    PMAN_RESOURCES=loc,pod,kube,dock,hpc

The order is chosen so that each routing rule has one answer:

* a GPU job: loc and pod cannot give GPUs; kube is the first that declares them
  (dock would too, but comes after it; this machine has no GPU, the stand-in's
  node declares two);
* a 2-worker job: loc, pod and dock run one container per job and kube caps
  workers at 1 (KUBE_PMAN_MAX_WORKERS, a resource's own cap): hpc (SLURM);
* overflow: loc holds one job (PMAN_MAX_RUNNING=1) and passes jobs on
  (PMAN_OVERFLOW=yes) to the next able resource with room, pod; kube also
  holds one job, without overflow: a second GPU job waits in its queue;
* the podman resource talks to a Podman service this module starts on a
  socket of its own, so that one test can stop that engine (and start it
  again) without touching the machine's shared daemons.

The tests share the server (module scope) and clean up their jobs; every wait
polls with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import kubernetes.client
import kubernetes.config
import pytest
import requests

from pman.labels import LABEL_RESOURCE
from tests.helpers import job_body, start_server, wait_status
from tests.integration.conftest import (
    SOCKETS,
    TEST_IMAGE,
    engine_client,
    engine_missing,
    slurm_cluster,
)
from tests.standins.kube.standin import KubeStandin

pytestmark = [
    pytest.mark.local,
    pytest.mark.docker,
    pytest.mark.podman,
    pytest.mark.slurm,
    pytest.mark.kubernetes,
]

PMAN = str(Path(sys.executable).with_name("pman"))
#: name -> engine, in PMAN_RESOURCES order
RESOURCES = {
    "loc": "local",
    "pod": "podman",
    "kube": "kubernetes",
    "dock": "docker",
    "hpc": "slurm",
}
NAMESPACE = "fiveres-jobs"
TOKEN = "fiveres-token"
FINISHED = ("finishedSuccessfully", "finishedWithError")
#: the longest any state is waited for (a loaded machine, five engines)
WAIT = 90.0


def wait_until(what: Callable[[], Any], timeout: float = WAIT, why: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {why or what}")
        time.sleep(0.2)
    return value


class PodmanService:
    """``podman system service`` on a socket of this module's own: an engine the
    tests may stop and start again (the machine's shared service is never touched)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if shutil.which("podman") is None:
            engine_missing("podman is not installed; run scripts/engines-up.sh")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", self.url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.answers, timeout=60, why=f"podman service at {self.url}")

    def answers(self) -> bool:
        try:
            client = docker.APIClient(base_url=self.url, version="1.41", timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> docker.APIClient:
        return docker.APIClient(base_url=self.url, version="1.41", timeout=30)


@dataclass
class Site:
    """The five-resource pman and the engines under it."""

    env: dict[str, str]
    base: Path
    kube: KubeStandin
    podman: PodmanService
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    #: every job the tests made, to remove at the end
    jids: list[str] = field(default_factory=list)

    # ---- the server
    def start(self) -> None:
        with open(self.base / "access.log", "a") as access:
            self.proc, self.url, _ = start_server(
                [PMAN, "serve", "--port", "0", "--workers", "1"],
                self.env,
                1,
                stdout=access,
                new_session=True,
                stderr_copy=self.base / "pman.log",
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # ---- the API
    def body(self, script: str = "echo ran", **overrides: Any) -> dict[str, Any]:
        """A job every engine runs: ``sh -c SCRIPT`` (on the host for loc and hpc,
        in the test image elsewhere), its output folder of its own."""
        jid = f"fiveres-{uuid.uuid4().hex[:10]}"
        b = job_body(
            jid=jid,
            image=TEST_IMAGE,
            entrypoint=["sh", "-c", script, "job"],
            args=[],
            type="fs",
            output_dir=f"key-1/out-{jid}",
            **overrides,
        )
        self.jids.append(jid)
        return b

    def post(self, body: dict[str, Any], prefix: str = "") -> requests.Response:
        return requests.post(f"{self.url}{prefix}/api/v1/", json=body, timeout=60)

    def get(self, jid: str, prefix: str = "") -> requests.Response:
        return requests.get(f"{self.url}{prefix}/api/v1/{jid}/", timeout=60)

    def delete(self, jid: str) -> requests.Response:
        return requests.delete(f"{self.url}/api/v1/{jid}/", timeout=60)

    def submit(self, body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        resp = self.post(body, prefix)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def wait(self, jid: str, until: tuple[str, ...] = FINISHED, timeout: float = WAIT) -> Any:
        return wait_status(self.get, jid, until, timeout, period=0.2)

    def resources(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        resp = requests.get(f"{self.url}{prefix}/api/v1/resources/", timeout=60)
        assert resp.status_code == 200, resp.text
        return {r["name"]: r for r in resp.json()["resources"]}

    def health(self) -> requests.Response:
        return requests.get(f"{self.url}/health", timeout=60)

    def remove(self, *jids: str) -> None:
        """DELETE each job and wait until no engine has it."""
        for jid in jids:
            assert self.delete(jid).status_code in (204, 404)
        for jid in jids:
            wait_until(lambda j=jid: self.engines_with(j) == [], why=f"{jid} gone from engines")

    # ---- the engines' own view
    def engine_labels(self, resource: str, jid: str) -> dict[str, str] | None:
        """The labels of the job's engine object (None: an engine without labels)."""
        if resource in ("pod", "dock"):
            api = self.podman.client() if resource == "pod" else engine_client("docker")
            return dict(api.inspect_container(jid)["Config"]["Labels"] or {})
        if resource == "kube":
            return dict(kube_job(self.kube, jid).metadata.labels or {})
        return None

    def engines_with(self, jid: str) -> list[str]:
        """The resources whose engine has a job named ``jid`` (asked directly)."""
        return [name for name in RESOURCES if self.on_engine(name, jid)]

    def on_engine(self, resource: str, jid: str) -> bool:
        if resource == "loc":
            return (self.base / "data" / "local" / "jobs" / jid).exists()
        if resource in ("pod", "dock"):
            if resource == "pod" and not self.podman.answers():
                return False
            api = self.podman.client() if resource == "pod" else engine_client("docker")
            try:
                api.inspect_container(jid)
                return True
            except docker.errors.NotFound:
                return False
        if resource == "hpc":
            out = subprocess.run(
                ["squeue", "-h", "-t", "PD,R,CG,CF,S", f"--name={jid}", "-o", "%i"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
            return bool(out.strip())
        return kube_job(self.kube, jid) is not None


def kube_job(kube: KubeStandin, name: str) -> Any:
    api = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig_path))
    try:
        return kubernetes.client.BatchV1Api(api).read_namespaced_job(name, NAMESPACE)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise
    finally:
        api.close()


def resource_env(base: Path, kube: KubeStandin, podman: PodmanService) -> dict[str, str]:
    """The environment of the five-resource pman; each resource its own STOREBASE."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "PMAN_AUTH": "none",
        "PMAN_DATA_DIR": str(base / "data"),
        "PMAN_RESOURCES": ",".join(RESOURCES),
        # local: one job at a time, the next passed on
        "LOC_CONTAINER_ENV": "local",
        "LOC_PMAN_MAX_RUNNING": "1",
        "LOC_PMAN_OVERFLOW": "yes",
        # podman: the service this module controls
        "POD_CONTAINER_ENV": "podman",
        "POD_DOCKER_HOST": podman.url,
        # kubernetes: GPUs, one job at a time and no overflow, workers capped at 1
        "KUBE_CONTAINER_ENV": "kubernetes",
        "KUBE_KUBECONFIG": str(kube.kubeconfig_path),
        "KUBE_JOB_NAMESPACE": NAMESPACE,
        "KUBE_PMAN_MAX_RUNNING": "1",
        "KUBE_PMAN_MAX_WORKERS": "1",
        "KUBE_PMAN_RESOURCE_DESCRIPTION": "GPU cluster (the stand-in)",
        # docker
        "DOCK_CONTAINER_ENV": "docker",
        "DOCK_DOCKER_HOST": SOCKETS["docker"],
        # slurm: jobs run on the node itself, one at a time
        "HPC_CONTAINER_ENV": "slurm",
        "HPC_SLURM_CONTAINER_RUNTIME": "none",
        "HPC_PMAN_MAX_RUNNING": "1",
    }
    for name in RESOURCES:
        store = base / f"store-{name}"
        (store / "key-1" / "incoming").mkdir(parents=True)
        (store / "key-1" / "incoming" / "data.txt").write_text(f"data of {name}\n")
        env[f"{name.upper()}_STOREBASE"] = str(store)
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if shutil.which("bwrap") is None:
        engine_missing("bubblewrap (bwrap) is not installed: the local backend needs it")
    engine_client("docker")
    engine_client("podman")  # the image is in Podman's store (shared with our service)
    slurm_cluster()
    base = tmp_path_factory.mktemp("fiveres")
    kube = KubeStandin(
        token=TOKEN,
        node_allocatable={"cpu": "4", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "2"},
    )
    kube.start()
    kube.kubeconfig_path = kube.write_kubeconfig(base / "kubeconfig", NAMESPACE)
    podman = PodmanService(base / "podman.sock")
    site = Site(resource_env(base, kube, podman), base, kube, podman)
    try:
        podman.start()
        site.start()
        yield site
    finally:
        if site.proc is not None:
            for jid in site.jids:
                with contextlib.suppress(Exception):
                    site.delete(jid)
        site.stop()
        # whatever a failed test left on an engine
        if podman.answers():
            for jid in site.jids:
                with contextlib.suppress(docker.errors.NotFound):
                    podman.client().remove_container(jid, force=True)
        podman.stop()
        for jid in site.jids:
            with contextlib.suppress(docker.errors.NotFound):
                engine_client("docker").remove_container(jid, force=True)
            subprocess.run(["scancel", f"--name={jid}"], capture_output=True, check=False)
        kube.stop()


@pytest.fixture
def jobs(site: Site) -> Iterator[list[str]]:
    """The jids a test makes, each removed (and gone from every engine) afterwards,
    so that no test's jobs hold another test's capacity."""
    made: list[str] = []
    yield made
    if site.proc is not None:
        site.remove(*made)


# ---------------------------------------------------------------- by field
@pytest.mark.parametrize("resource", list(RESOURCES))
def test_a_job_runs_on_the_resource_it_names(site: Site, jobs: list[str], resource: str) -> None:
    body = site.body('echo "ran on $0"')
    body["compute_resource"] = resource
    jobs.append(body["jid"])
    answer = site.submit(body)
    assert answer["compute_resource"] == resource, answer
    # submission is synchronous: the engine has the job when the 201 is sent
    assert site.engines_with(body["jid"]) == [resource]
    # and the engine's object says its resource (adoption after a restart reads it)
    labels = site.engine_labels(resource, body["jid"])
    if labels is not None:
        assert labels.get(LABEL_RESOURCE) == resource, labels
    done = site.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert done["compute_resource"] == resource
    assert "ran on job" in done["logs"], done
    # its output is in its resource's STOREBASE, nowhere else
    outputs = [n for n in RESOURCES if (site.base / f"store-{n}" / body["output_dir"]).is_dir()]
    assert outputs == [resource]
    listed = requests.get(
        f"{site.url}/api/v1/jobs/", params={"compute_resource": resource}, timeout=60
    ).json()["jobs"]
    assert body["jid"] in [j["jid"] for j in listed]
    assert {j["compute_resource"] for j in listed} == {resource}
    events = requests.get(f"{site.url}/api/v1/{body['jid']}/events/", timeout=60).json()
    assert events["compute_resource"] == resource, events


def test_an_unknown_resource_is_a_400_naming_the_field(site: Site) -> None:
    body = site.body(compute_resource="mainframe")
    resp = site.post(body)
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert "compute_resource" in error["fields"], error
    assert "mainframe" in error["message"], error
    assert site.get(body["jid"]).status_code == 404
    assert site.engines_with(body["jid"]) == []


# ---------------------------------------------------------------- by capability
def test_a_two_worker_job_goes_to_the_first_resource_that_runs_workers(
    site: Site, jobs: list[str]
) -> None:
    script = 'echo "worker $PMAN_WORKER_INDEX of $PMAN_NUMBER_OF_WORKERS"'
    body = site.body(script, number_of_workers=2)
    jobs.append(body["jid"])
    answer = site.submit(body)
    # loc, pod and dock run one container per job; kube caps workers at 1
    assert answer["compute_resource"] == "hpc", answer
    done = site.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert "of 2" in done["logs"], done


def test_a_gpu_job_goes_to_the_first_resource_with_gpus(site: Site, jobs: list[str]) -> None:
    body = site.body("echo gpu job", gpu_limit=1)
    jobs.append(body["jid"])
    answer = site.submit(body)
    assert answer["compute_resource"] == "kube", answer
    assert site.engines_with(body["jid"]) == ["kube"]
    job = kube_job(site.kube, body["jid"])
    (container,) = job.spec.template.spec.containers
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    done = site.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done


@pytest.mark.parametrize("resource", ["loc", "pod"])
def test_a_gpu_job_named_for_a_resource_without_gpus_is_refused(site: Site, resource: str) -> None:
    body = site.body(gpu_limit=1, compute_resource=resource)
    resp = site.post(body)
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert "compute_resource" in error["fields"], error
    assert resource in error["message"] and "GPU" in error["message"], error
    assert site.get(body["jid"]).status_code == 404
    assert site.engines_with(body["jid"]) == []


def test_a_job_no_resource_can_run_is_refused_with_each_reason(site: Site) -> None:
    # more workers than any resource's cap (PMAN_MAX_WORKERS: 100, kube's 1), and
    # more than loc, pod and dock run at all
    body = site.body(number_of_workers=101)
    resp = site.post(body)
    assert resp.status_code == 400, resp.text
    error = resp.json()
    assert "compute_resource" in error["fields"], error
    for name in RESOURCES:
        assert f"'{name}'" in error["message"], error
    assert site.get(body["jid"]).status_code == 404


# ---------------------------------------------------------------- by URL
def test_a_url_prefix_pins_the_resource(site: Site, jobs: list[str]) -> None:
    body = site.body()
    jobs.append(body["jid"])
    answer = site.submit(body, prefix="/dock")
    assert answer["compute_resource"] == "dock", answer
    assert site.engines_with(body["jid"]) == ["dock"]
    site.wait(body["jid"])
    # the same job through its resource's prefix and through the plain API
    assert site.get(body["jid"], prefix="/dock").status_code == 200
    assert site.get(body["jid"]).json()["compute_resource"] == "dock"
    # another resource's prefix does not know it
    for other in ("pod", "hpc"):
        assert site.get(body["jid"], prefix=f"/{other}").status_code == 404
        listed = requests.get(f"{site.url}/{other}/api/v1/jobs/", timeout=60).json()["jobs"]
        assert body["jid"] not in [j["jid"] for j in listed]
        assert {j["compute_resource"] for j in listed} <= {other}
    listed = requests.get(f"{site.url}/dock/api/v1/jobs/", timeout=60).json()["jobs"]
    assert body["jid"] in [j["jid"] for j in listed]
    assert {j["compute_resource"] for j in listed} == {"dock"}
    # its own resources list is itself alone
    assert list(site.resources(prefix="/dock")) == ["dock"]


def test_a_url_prefix_refuses_a_body_naming_another_resource(site: Site) -> None:
    body = site.body(compute_resource="pod")
    resp = site.post(body, prefix="/dock")
    assert resp.status_code == 400, resp.text
    assert "compute_resource" in resp.json()["fields"], resp.text
    assert site.engines_with(body["jid"]) == []


def test_an_unknown_prefix_is_a_404(site: Site) -> None:
    body = site.body()
    assert site.post(body, prefix="/mainframe").status_code == 404
    assert requests.get(f"{site.url}/mainframe/api/v1/jobs/", timeout=60).status_code == 404
    assert site.get(body["jid"]).status_code == 404


# ---------------------------------------------------------------- overflow and queues
def test_a_full_resource_that_allows_overflow_passes_the_next_job_on(
    site: Site, jobs: list[str]
) -> None:
    first = site.body("sleep 300")
    second = site.body("echo overflowed")
    jobs += [first["jid"], second["jid"]]
    assert site.submit(first)["compute_resource"] == "loc"
    # loc is at its PMAN_MAX_RUNNING (1) and allows overflow: the next able one, pod
    answer = site.submit(second)
    assert answer["compute_resource"] == "pod", answer
    assert answer["status"] != "notstarted", answer
    assert site.engines_with(second["jid"]) == ["pod"]
    assert site.wait(second["jid"])["status"] == "finishedSuccessfully"
    assert site.wait(first["jid"], until=("started",))["compute_resource"] == "loc"


def test_a_full_resource_without_overflow_queues_the_job(site: Site, jobs: list[str]) -> None:
    running = site.body("sleep 300", gpu_limit=1)
    waiting = site.body("echo my turn", gpu_limit=1)
    jobs += [running["jid"], waiting["jid"]]
    assert site.submit(running)["compute_resource"] == "kube"
    site.wait(running["jid"], until=("started",))
    # kube is full and passes nothing on: the job waits in its queue, although
    # dock (after it) could give GPUs and has room
    answer = site.submit(waiting)
    assert answer["compute_resource"] == "kube", answer
    assert answer["status"] == "notstarted", answer
    assert site.engines_with(waiting["jid"]) == []
    listed = site.resources()
    assert (listed["kube"]["running"], listed["kube"]["queued"]) == (1, 1), listed["kube"]
    # room again: it starts on its own resource
    assert site.delete(running["jid"]).status_code == 204
    done = site.wait(waiting["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert done["compute_resource"] == "kube"
    assert kube_job(site.kube, waiting["jid"]) is not None


def test_queued_jobs_keep_their_resource_across_a_restart(site: Site, jobs: list[str]) -> None:
    kube_running = site.body("sleep 300", gpu_limit=1)
    kube_waiting = site.body("echo kube turn", gpu_limit=1)
    hpc_running = site.body("sleep 300", number_of_workers=2)
    hpc_waiting = site.body('echo "hpc turn $PMAN_WORKER_INDEX"', number_of_workers=2)
    bodies = (kube_running, kube_waiting, hpc_running, hpc_waiting)
    jobs += [b["jid"] for b in bodies]
    for body, resource, status in zip(
        bodies, ("kube", "kube", "hpc", "hpc"), ("", "notstarted", "", "notstarted"), strict=True
    ):
        answer = site.submit(body)
        assert answer["compute_resource"] == resource, answer
        if status:
            assert answer["status"] == status, answer
    site.restart()
    for body, resource in ((kube_waiting, "kube"), (hpc_waiting, "hpc")):
        data = site.get(body["jid"]).json()
        assert (data["status"], data["compute_resource"]) == ("notstarted", resource), data
        assert site.engines_with(body["jid"]) == []
    listed = site.resources()
    for name in ("kube", "hpc"):
        assert listed[name]["queued"] == 1, listed[name]
        assert listed[name]["running"] == 1, listed[name]
    # the capacity is each resource's own: freeing kube starts kube's job only
    assert site.delete(kube_running["jid"]).status_code == 204
    done = site.wait(kube_waiting["jid"])
    assert (done["status"], done["compute_resource"]) == ("finishedSuccessfully", "kube"), done
    assert site.get(hpc_waiting["jid"]).json()["status"] == "notstarted"
    assert site.delete(hpc_running["jid"]).status_code == 204
    done = site.wait(hpc_waiting["jid"])
    assert (done["status"], done["compute_resource"]) == ("finishedSuccessfully", "hpc"), done


# ---------------------------------------------------------------- listing and health
def test_the_resources_are_listed_in_order_with_their_counts(site: Site) -> None:
    resp = requests.get(f"{site.url}/api/v1/resources/", timeout=60)
    assert resp.status_code == 200, resp.text
    listed = resp.json()["resources"]
    assert [(r["name"], r["backend"]) for r in listed] == list(RESOURCES.items())
    by_name = {r["name"]: r for r in listed}
    for r in listed:
        assert r["healthy"] is True and r["problem"] is None, r
        assert isinstance(r["running"], int) and isinstance(r["queued"], int), r
        assert set(r["capabilities"]) >= {"gpus", "max_workers", "array_workers"}, r
        assert set(r["caps"]) >= {"max_running", "max_workers", "image_allowlist"}, r
    assert by_name["kube"]["description"] == "GPU cluster (the stand-in)"
    assert by_name["kube"]["capabilities"]["gpus"] is True
    assert by_name["kube"]["caps"]["max_running"] == 1
    assert by_name["kube"]["caps"]["max_workers"] == 1
    for single in ("loc", "pod"):
        assert by_name[single]["capabilities"]["gpus"] is False
        assert by_name[single]["capabilities"]["max_workers"] == 1
    assert by_name["loc"]["caps"]["max_running"] == 1
    assert by_name["hpc"]["capabilities"]["max_workers"] in (None, 0) or (
        by_name["hpc"]["capabilities"]["max_workers"] > 1
    )
    health = site.health()
    assert health.status_code == 200, health.text
    assert {
        name: (r["backend"], r["healthy"]) for name, r in health.json()["resources"].items()
    } == {name: (engine, True) for name, engine in RESOURCES.items()}


def test_a_stopped_engine_fails_its_own_jobs_only(site: Site, jobs: list[str]) -> None:
    before = site.body("sleep 300", compute_resource="pod")
    jobs.append(before["jid"])
    site.submit(before)
    site.podman.stop()
    try:
        # a job sent to the stopped engine: 503, not recorded
        refused = site.body(compute_resource="pod")
        resp = site.post(refused)
        assert resp.status_code == 503, resp.text
        assert "unreachable" in resp.json()["message"], resp.text
        assert site.podman.url in resp.json()["message"], resp.text
        assert site.get(refused["jid"]).status_code == 404
        # /health stays 200 and says which resource is down
        health = site.health()
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok", health.text
        assert "pod" in health.json()["message"], health.text
        resources = health.json()["resources"]
        assert resources["pod"]["healthy"] is False and resources["pod"]["problem"], resources
        assert all(r["healthy"] for name, r in resources.items() if name != "pod"), resources
        listed = site.resources()
        assert listed["pod"]["healthy"] is False and listed["pod"]["problem"], listed["pod"]
        # every other resource runs jobs as before, and none reports the other's trouble
        others = [site.body("echo still here", compute_resource=n) for n in RESOURCES if n != "pod"]
        jobs.extend(b["jid"] for b in others)
        for body in others:
            assert site.post(body).status_code == 201
        for body in others:
            done = site.wait(body["jid"])
            assert done["status"] == "finishedSuccessfully", done
            assert "podman" not in done["message"].lower(), done
            assert "still here" in done["logs"], done
        # a job without a field never goes to it (loc has room: it takes it)
        plain = site.body()
        jobs.append(plain["jid"])
        assert site.submit(plain)["compute_resource"] != "pod"
        site.wait(plain["jid"])
    finally:
        site.podman.start()
    # back: healthy again, its job still there, new jobs run
    wait_until(lambda: site.health().json()["resources"]["pod"]["healthy"], why="pod healthy again")
    assert site.get(before["jid"]).status_code == 200
    again = site.body("echo back", compute_resource="pod")
    jobs.append(again["jid"])
    site.submit(again)
    assert site.wait(again["jid"])["status"] == "finishedSuccessfully"
