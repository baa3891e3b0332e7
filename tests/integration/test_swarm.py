"""The swarm backend against the real single-node swarm, through pman's HTTP API.

The Docker engine must be a swarm manager (scripts/swarm-up.sh); when it is
not, these tests skip on a laptop and fail in CI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import docker.errors
import pytest

from tests.integration.conftest import Pman

pytestmark = pytest.mark.swarm

_MIB = 1024 * 1024


def small(p: Pman, plugin: str = "copyplugin", **overrides: Any) -> dict[str, Any]:
    """A job body reserving a tenth of a CPU: the test node has two CPUs, other
    tests share it, and the swarm reserves what a job asks for."""
    return p.body(plugin, **{"cpu_limit": 100, **overrides})


def service(p: Pman, jid: str) -> dict[str, Any] | None:
    assert p.engine is not None
    try:
        return p.engine.inspect_service(jid)
    except docker.errors.NotFound:
        return None


def containers_of(p: Pman, service_id: str) -> list[dict[str, Any]]:
    assert p.engine is not None
    return p.engine.containers(
        all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}
    )


def test_lifecycle_limits_in_spec_and_delete(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm", JOB_LABELS="team=pman-tests", SHM_SIZE="64")
    body = small(p, args=["--prefix", "out-"], memory_limit=64, cpu_limit=500)
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    jid = body["jid"]

    data = p.wait(jid)
    assert data["status"] == "finishedSuccessfully", data
    assert "copied data.txt -> out-data.txt" in data["logs"]
    assert "\r" not in data["logs"]
    assert (p.out(body) / "out-data.txt").read_text() == "some data\n"
    assert "input read-only" in (p.out(body) / "report.txt").read_text()

    svc = service(p, jid)
    assert svc is not None
    spec = svc["Spec"]
    template = spec["TaskTemplate"]
    res = template["Resources"]
    assert res["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * _MIB}
    assert res["Reservations"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * _MIB}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    # pman's labels on the service and on its containers (the tracker adopts by them)
    for labels in (spec["Labels"], template["ContainerSpec"]["Labels"]):
        assert labels["org.chrisproject.pman"] == "true"
        assert labels["team"] == "pman-tests"
    shm = [m for m in template["ContainerSpec"]["Mounts"] if m["Target"] == "/dev/shm"]
    assert shm and shm[0]["Type"] == "tmpfs"
    assert shm[0]["TmpfsOptions"]["SizeBytes"] == 64 * _MIB
    ro = {m["Target"]: m.get("ReadOnly", False) for m in template["ContainerSpec"]["Mounts"]}
    assert ro["/share/incoming"] is True and ro["/share/outgoing"] is False

    # DELETE removes the service, its tasks' containers with it; twice is fine
    assert p.delete(jid).status_code == 204
    assert service(p, jid) is None
    deadline = time.monotonic() + 60
    while containers_of(p, svc["ID"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers_of(p, svc["ID"]) == []
    assert p.delete(jid).status_code in (204, 404)


def test_memory_limit_enforced_and_reported_as_oom(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm")
    body = small(p, "memhog", args=["--size", "256M"], memory_limit=32)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedWithError", data
    assert "out of memory" in data["message"], data
    assert "32 MiB" in data["message"]


def test_container_user_applied(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm", CONTAINER_USER="1000:1000")
    body = small(p, "sh", entrypoint=["sh", "-c", "id", "sh"], args=[])
    body["type"] = "fs"
    p.post(body).raise_for_status()
    data = p.wait(body["jid"])
    assert "uid=1000 gid=1000" in data["logs"], data
    svc = service(p, body["jid"])
    assert svc is not None
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["User"] == "1000:1000"


def test_missing_image_is_reported_with_the_swarm_message(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm")
    body = small(p, image="localhost/pman-no-such-image:latest")
    assert p.post(body).status_code == 201
    # the swarm's own rejection, not pman's pending timeout (its message differs)
    data = p.wait(body["jid"], timeout=120)
    assert data["status"] == "finishedWithError", data
    assert "No such image" in data["message"], data
    assert "rejected" in data["message"]


def test_unschedulable_job_ends_after_the_pending_timeout(
    make_pman: Callable[..., Pman],
) -> None:
    p = make_pman("swarm", PMAN_SWARM_PENDING_TIMEOUT="3")
    # no node has a petabyte of memory: the task stays pending
    body = small(p, memory_limit=1024 * 1024 * 1024)
    assert p.post(body).status_code == 201
    # the tracker alone (no poll) finds it; its safety-net poll runs every 5 s
    rec = p.wait_record(body["jid"], timeout=30)
    assert rec.state.name == "SYSTEM_ERROR"
    assert "insufficient resources" in rec.message, rec.message
    data = p.get(body["jid"]).json()
    assert data["status"] == "finishedWithError"


def test_failing_job_and_tracker_sees_the_end(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm")
    ok = small(p, args=["--sleep", "1"])
    bad = small(p, "failplugin")
    for b in (ok, bad):
        assert p.post(b).status_code == 201
    # no GET: the tracker alone follows the swarm
    rec = p.wait_record(ok["jid"])
    assert rec.state.name == "SUCCEEDED"
    assert "copyplugin: done" in (rec.logs or "")
    rec = p.wait_record(bad["jid"])
    assert rec.state.name == "FAILED"
    assert "exit" in rec.message and "3" in rec.message
    data = p.get(bad["jid"]).json()
    assert data["status"] == "finishedWithError"
    assert "failing on purpose" in data["logs"]


def test_two_workers_each_know_their_index(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm")
    # an inline script: $2 is the output folder (command: sh -c S sh IN OUT)
    script = (
        'echo "worker $PMAN_WORKER_INDEX of $PMAN_NUMBER_OF_WORKERS"; '
        'echo "$PMAN_WORKER_INDEX" > "$2/worker-$PMAN_WORKER_INDEX"'
    )
    body = small(p, entrypoint=["sh", "-c", script, "sh"], args=[], number_of_workers=2)
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    data = p.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    out = p.out(body)
    assert sorted(f.name for f in out.iterdir()) == ["worker-1", "worker-2"]
    assert "worker 1 of 2" in data["logs"] and "worker 2 of 2" in data["logs"]
    svc = service(p, body["jid"])
    assert svc is not None
    assert svc["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}


def test_a_failed_worker_fails_the_job_and_is_not_rerun(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm")
    # worker 2 fails, worker 1 succeeds a little later
    script = '[ "$PMAN_WORKER_INDEX" = 2 ] && exit 5; sleep 1; echo "worker $PMAN_WORKER_INDEX ran"'
    body = small(p, entrypoint=["sh", "-c", script, "sh"], args=[], number_of_workers=2)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedWithError", data
    assert "worker 2" in data["message"] and "5" in data["message"], data
    assert "worker 1 ran" in data["logs"]
    time.sleep(3)  # the swarm must not run the failed worker again
    assert p.engine is not None
    tasks = p.engine.tasks(filters={"service": body["jid"]})
    assert len(tasks) == 2, tasks


def test_bad_names_and_gpus_are_refused(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("swarm")
    resp = p.post(small(p, jid="has.a.dot"))
    assert resp.status_code == 400 and "jid" in resp.text
    # this node advertises no GPUs as generic resources
    resp = p.post(small(p, gpu_limit=1))
    assert resp.status_code == 400, resp.text
    assert "gpu_limit" in resp.text
