"""The Kubernetes backend through pman's HTTP API, against the API stand-in.

No Kubernetes API server can run on these machines: tests/standins/kube/standin.py
serves the API paths pman uses to the official client, validates every body
against the Kubernetes 1.30 schemas, and plays the Job controller and the
kubelet by running each pod as a real container on the local Docker engine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import requests

from tests.helpers import late_memhog
from tests.integration.conftest import Pman, engine_client
from tests.standins.kube.standin import KubeStandin

pytestmark = pytest.mark.kubernetes

NAMESPACE = "pman-jobs"
TOKEN = "pman-test-token"


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStandin]:
    engine_client("docker")  # the stand-in's pods are Docker containers
    root = tmp_path_factory.mktemp("kube")
    (root / "pvc").mkdir()
    (root / "nfs").mkdir()
    standin = KubeStandin(
        docker_url="unix:///var/run/docker.sock",
        k8s_version="1.30.0",
        token=TOKEN,
        pvcs={"storebase": root / "pvc"},
        nfs_exports={"nfs.test": root / "nfs"},
    )
    standin.start()
    # for the tests: where its claim and its NFS server keep their files
    standin.kubeconfig_path = standin.write_kubeconfig(root / "kubeconfig", namespace=NAMESPACE)
    standin.pvc_root = root / "pvc"
    standin.nfs_root = root / "nfs"
    yield standin
    assert standin.controller_errors() == []
    standin.stop()
    assert standin.containers() == []


@pytest.fixture
def kpman(kube: KubeStandin, make_pman: Callable[..., Pman]) -> Iterator[Callable[..., Pman]]:
    """kpman(**ENV) -> a pman on the stand-in; afterwards no pod is left running."""

    def make(**env: str) -> Pman:
        return make_pman(
            "kubernetes",
            KUBECONFIG=str(kube.kubeconfig_path),
            JOB_NAMESPACE=NAMESPACE,
            PMAN_KUBERNETES_PENDING_TIMEOUT=env.pop("PMAN_KUBERNETES_PENDING_TIMEOUT", "3"),
            **env,
        )

    yield make


def api(kube: KubeStandin) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig_path))


def read_job(kube: KubeStandin, name: str) -> Any:
    batch = kubernetes.client.BatchV1Api(api(kube))
    try:
        return batch.read_namespaced_job(name, NAMESPACE)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return None
        raise


def pods_of(kube: KubeStandin, name: str) -> list[Any]:
    core = kubernetes.client.CoreV1Api(api(kube))
    return core.list_namespaced_pod(
        NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={name}"
    ).items


def wait_until(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what}")
        time.sleep(0.2)
    return value


def containers_gone(kube: KubeStandin) -> None:
    wait_until(lambda: kube.containers() == [])


def test_lifecycle_with_limits_and_security_in_the_job(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    p = kpman(JOB_LABELS="team=pman-tests", SHM_SIZE="64")
    script = 'copyplugin "$@" && grep CapEff /proc/self/status && df -m /dev/shm'
    body = p.body("sh", entrypoint=["sh", "-c", script, "sh"])
    body["memory_limit"] = 64
    body["cpu_limit"] = 500
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    jid = body["jid"]

    data = p.wait(jid, timeout=60)
    assert data["status"] == "finishedSuccessfully", data
    assert "copied data.txt -> out-data.txt" in data["logs"]
    assert "CapEff:\t0000000000000000" in data["logs"]  # every capability dropped
    # SHM_SIZE: a 64 MiB memory-backed /dev/shm
    assert re.search(r"^tmpfs\s+64\s+\d+\s+\d+\s+\d+%\s+/dev/shm$", data["logs"], re.M), data[
        "logs"
    ]
    assert (p.out(body) / "out-data.txt").read_text() == "some data\n"
    assert "input read-only" in (p.out(body) / "report.txt").read_text()

    job = read_job(kube, jid)
    assert job is not None
    assert job.spec.backoff_limit == 0
    assert job.spec.active_deadline_seconds == 30 * 60
    assert job.metadata.labels["team"] == "pman-tests"
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never"
    (c,) = pod.containers
    assert c.resources.limits == {"cpu": "500m", "memory": "64Mi"}
    assert c.security_context.allow_privilege_escalation is False
    assert c.security_context.capabilities.drop == ["ALL"]

    assert p.delete(jid).status_code == 204
    assert read_job(kube, jid) is None
    wait_until(lambda: pods_of(kube, jid) == [])
    containers_gone(kube)
    assert p.delete(jid).status_code in (204, 404)


def test_container_user_applied(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman(CONTAINER_USER="1000:1000")
    body = p.body("sh", entrypoint=["sh", "-c", "id", "sh"], args=[])
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert "uid=1000 gid=1000" in data["logs"], data
    job = read_job(kube, body["jid"])
    assert job.spec.template.spec.security_context.run_as_user == 1000
    assert job.spec.template.spec.security_context.run_as_non_root is True


def test_failing_job_reports_its_exit_code(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman()
    body = p.body("failplugin")
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert data["status"] == "finishedWithError", data
    assert "exited with code 3" in data["message"]
    assert "failing on purpose" in data["logs"]


def test_memory_limit_enforced_and_reported_as_oom(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    p = kpman()
    # OOM-killed after its start: Docker under the stand-in may miss a kill at once
    body = p.body(**late_memhog("256M"), memory_limit=32)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert data["status"] == "finishedWithError", data
    assert "out of memory" in data["message"] and "32 MiB" in data["message"], data


def test_two_workers_as_an_indexed_job(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman()
    script = (
        'echo "worker $PMAN_WORKER_INDEX of $PMAN_NUMBER_OF_WORKERS"; '
        'touch "$1/w$PMAN_WORKER_INDEX"'
    )
    body = p.body("sh", entrypoint=["sh", "-c", script, "sh"], args=[], number_of_workers=2)
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert data["status"] == "finishedSuccessfully", data
    assert sorted(f.name for f in p.out(body).iterdir()) == ["w0", "w1"]
    assert "[worker 0] worker 0 of 2" in data["logs"]
    assert "[worker 1] worker 1 of 2" in data["logs"]
    job = read_job(kube, body["jid"])
    assert job.spec.completion_mode == "Indexed"
    assert job.spec.completions == job.spec.parallelism == 2


def test_dollar_signs_reach_the_job_as_sent(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman()
    body = p.body(
        "sh",
        entrypoint=["sh", "-c", 'echo "arg=$1 env=$GREETING"', "sh"],
        args=["$(HOME) costs $$5"],
        env=["GREETING=$(HOSTNAME)"],
    )
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert "arg=$(HOME) costs $$5 env=$(HOSTNAME)" in data["logs"], data


def test_missing_image_fails_after_the_grace_period(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    # a grace long enough that the poll right after the POST comes within it, on
    # a loaded machine too
    p = kpman(PMAN_KUBERNETES_PENDING_TIMEOUT="10")
    body = p.body(image="localhost/pman-no-such-image:1.0")
    assert p.post(body).status_code == 201
    first = p.get(body["jid"]).json()
    assert first["status"] == "notstarted", first
    data = p.wait(body["jid"], timeout=90)
    assert data["status"] == "finishedWithError", data
    assert "ErrImagePull" in data["message"] or "ImagePullBackOff" in data["message"], data
    assert p.delete(body["jid"]).status_code == 204
    containers_gone(kube)


def test_unschedulable_gpu_job_fails_after_the_grace_period(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    p = kpman(PMAN_KUBERNETES_PENDING_TIMEOUT="3")
    body = p.body(gpu_limit=1)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=90)
    assert data["status"] == "finishedWithError", data
    assert "Insufficient nvidia.com/gpu" in data["message"], data


def test_evicted_pod(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman()
    body = p.body("sleeper", args=["60"])
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    p.wait(body["jid"], until=("started",), timeout=60)
    (pod,) = wait_until(lambda: pods_of(kube, body["jid"]))
    kube.evict(NAMESPACE, pod.metadata.name, "The node was low on resource: memory.")
    data = p.wait(body["jid"], timeout=60)
    assert data["status"] == "finishedWithError", data
    assert "evicted" in data["message"] and "low on resource: memory" in data["message"]


def test_time_limit_kills_the_job(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman(TIMELIMIT_MINUTES="1")
    body = p.body("sleeper", args=["300"])
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=120)
    assert data["status"] == "finishedWithError", data
    assert "time limit of 1 minutes" in data["message"], data
    # the Job controller deletes the pods of a Job past its deadline: nothing keeps running
    wait_until(lambda: pods_of(kube, body["jid"]) == [])


def test_pvc_storage_with_sub_paths(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    data_dir = kube.pvc_root
    (data_dir / "key-9" / "in").mkdir(parents=True)
    (data_dir / "key-9" / "in" / "data.txt").write_text("on the claim\n")
    p = kpman(STORAGE_TYPE="kubernetes_pvc", VOLUME_NAME="storebase")
    body = p.body(input_dir="key-9/in", output_dir="key-9/out")
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert data["status"] == "finishedSuccessfully", data
    # pman cannot see the claim: the kubelet made the output folder
    assert (data_dir / "key-9" / "out" / "out-data.txt").read_text() == "on the claim\n"
    assert "input read-only" in (data_dir / "key-9" / "out" / "report.txt").read_text()


def test_nfs_storage(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    export = kube.nfs_root
    base = export / "exports" / "store"
    (base / "key-2" / "in").mkdir(parents=True)
    (base / "key-2" / "in" / "data.txt").write_text("over nfs\n")
    (base / "key-2" / "out").mkdir()
    p = kpman(STORAGE_TYPE="nfs", NFS_SERVER="nfs.test", STOREBASE="/exports/store")
    body = p.body(input_dir="key-2/in", output_dir="key-2/out")
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=60)
    assert data["status"] == "finishedSuccessfully", data
    assert (base / "key-2" / "out" / "out-data.txt").read_text() == "over nfs\n"


def test_jid_that_is_no_dns_label_is_400_and_creates_nothing(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    p = kpman()
    body = p.body(jid="Chris_Job.1")
    before = len([r for r in kube.requests if r[0] == "POST"])
    resp = p.post(body)
    assert resp.status_code == 400, resp.text
    assert "DNS-1123 label" in resp.json()["message"]
    assert "jid" in str(resp.json())
    assert len([r for r in kube.requests if r[0] == "POST"]) == before


def test_check_before_recording_with_the_queue_full(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    """Kubernetes lacks no capability a request can ask for: with pman's queue
    full (PMAN_MAX_RUNNING) several workers and GPUs wait in it like any job
    (whether a node has the GPUs only the scheduler can tell, once it runs);
    an environment variable name no job can have is a 400, never recorded."""
    p = kpman(PMAN_MAX_RUNNING="1")
    running = p.body("sleeper", args=["300"])
    running["type"] = "fs"
    assert p.post(running).status_code == 201
    gpus = p.body(number_of_workers=2, gpu_limit=1)
    resp = p.post(gpus)
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "notstarted", resp.text
    before = len([r for r in kube.requests if r[0] == "POST"])
    bad = p.body(env=["1BAD=x"])
    resp = p.post(bad)
    assert resp.status_code == 400, resp.text
    assert "env" in resp.json()["fields"], resp.text
    assert p.get(bad["jid"]).status_code == 404
    assert len([r for r in kube.requests if r[0] == "POST"]) == before
    for body in (gpus, running):
        assert p.delete(body["jid"]).status_code == 204
    assert read_job(kube, gpus["jid"]) is None, "the queued job never reached Kubernetes"
    containers_gone(kube)


def test_tracker_reads_all_jobs_in_two_calls(kube: KubeStandin, kpman: Callable[..., Pman]) -> None:
    p = kpman()
    bodies = [p.body() for _ in range(4)]
    for body in bodies:
        assert p.post(body).status_code == 201
    for body in bodies:
        p.wait(body["jid"], timeout=60)
    # the tracker follows a watch on pman's Jobs (and polls only as a safety net)
    watches = [q for method, path, q in kube.requests if path.endswith("/jobs") and "watch=" in q]
    assert watches and all("labelSelector=org.chrisproject.pman" in q for q in watches)
    assert p.service.tracker.watching
    backend = p.service.backend
    for expected in (4, 4):
        before = len(kube.requests)
        infos = backend.list()
        assert len(kube.requests) - before == 2
        assert len([i for i in infos if i.name in {b["jid"] for b in bodies}]) == expected


def test_cancel_suspends_the_job_and_logs_stream(
    kube: KubeStandin, kpman: Callable[..., Pman]
) -> None:
    """Cancel suspends the Job (kept; its pod deleted by the Job controller) and
    keeps the last log lines in the record; GET logs streams a pod's log,
    following it until the job ends."""
    p = kpman()
    body = p.body(entrypoint=["sh", "-c", "echo started-work; sleep 300", "job"], args=[])
    jid = body["jid"]
    assert p.post(body).status_code == 201

    def logs(name: str, query: str = "", **kw: Any) -> requests.Response:
        return requests.get(f"{p.url}/api/v1/{name}/logs/?{query}", timeout=120, **kw)

    deadline = time.monotonic() + 60
    while b"started-work" not in logs(jid).content:
        assert time.monotonic() < deadline, "the pod never wrote its line"
        time.sleep(0.2)
    resp = requests.post(f"{p.url}/api/v1/{jid}/cancel/", timeout=60)
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert (job["status"], job["message"]) == ("finishedWithError", "cancelled")
    assert "started-work" in job["logs"]
    assert read_job(kube, jid).spec.suspend is True
    deadline = time.monotonic() + 60
    while p.service.backend.get(jid).state.value != "cancelled":
        assert time.monotonic() < deadline, (
            f"the Job controller never stopped the pod: {read_job(kube, jid).status}"
        )
        time.sleep(0.2)
    p.service.tracker.run_once()
    assert p.get(jid).json()["logs"] == job["logs"]
    assert p.delete(jid).status_code == 204

    body = p.body(
        entrypoint=["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.5; done", "job"],
        args=[],
    )
    assert p.post(body).status_code == 201
    with logs(body["jid"], "follow=true", stream=True) as r:
        assert r.status_code == 200
        lines = [line.decode() for line in r.iter_lines()]
    assert lines == ["tick 1", "tick 2", "tick 3"]
    p.wait(body["jid"])
    assert logs(body["jid"], "tail=1").text == "tick 3\n"
    assert logs(body["jid"], "since=2000-01-01T00:00:00Z").text == "tick 1\ntick 2\ntick 3\n"
