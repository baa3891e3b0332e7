"""What only a container engine can show: isolation, limits, OOM, engine
failures. Runs against the real Docker engine and the real Podman service."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable

import docker.errors
import pytest
import requests

from tests.helpers import late_memhog
from tests.integration.conftest import CONTAINER_BACKENDS, TEST_IMAGE, Pman

MiB = 1024 * 1024


def test_input_is_read_only_output_writable(cpman: Pman) -> None:
    body = cpman.body()
    assert cpman.post(body).status_code == 201
    assert cpman.wait(body["jid"])["status"] == "finishedSuccessfully"
    report = (cpman.out(body) / "report.txt").read_text()
    assert "input read-only" in report
    assert not (cpman.storebase / body["input_dir"] / ".pman-write-probe").exists()
    attrs = cpman.container(body["jid"])
    assert attrs is not None
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/share/incoming"]["RW"] is False
    assert mounts["/share/outgoing"]["RW"] is True


def test_limits_are_applied(cpman: Pman) -> None:
    body = cpman.body(cpu_limit=500, memory_limit=96, args=["--sleep", "1"])
    assert cpman.post(body).status_code == 201
    attrs = cpman.container(body["jid"])
    assert attrs is not None
    host = attrs["HostConfig"]
    assert host["Memory"] == 96 * MiB, "memory_limit must be a hard limit"
    assert host["MemorySwap"] == 96 * MiB, "no swap beyond the limit"
    assert host["NanoCpus"] == 500_000_000
    labels = attrs["Config"]["Labels"]
    assert labels["org.chrisproject.pman"] == "true"
    assert labels["org.chrisproject.pman.jid"] == body["jid"]
    assert cpman.wait(body["jid"])["status"] == "finishedSuccessfully"


def test_ignore_limits(make_pman: Callable[..., Pman], backend: str) -> None:
    p = make_pman(backend, IGNORE_LIMITS="yes")
    body = p.body(cpu_limit=500, memory_limit=96)
    assert p.post(body).status_code == 201
    host = p.container(body["jid"])["HostConfig"]  # type: ignore[index]
    assert (host["Memory"], host["NanoCpus"]) == (0, 0)


def test_user_labels_shm_home(make_pman: Callable[..., Pman], backend: str) -> None:
    p = make_pman(
        backend,
        CONTAINER_USER="1234:2345",
        JOB_LABELS="site=test,team=pman",
        SHM_SIZE="32",
        ENABLE_HOME_WORKAROUND="yes",
    )
    body = p.body(args=["--env", "HOME"])
    out = p.storebase / body["output_dir"]
    out.mkdir(parents=True)
    out.chmod(0o777)
    assert p.post(body).status_code == 201
    done = p.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    report = (out / "report.txt").read_text()
    assert "uid 1234\n" in report and "gid 2345\n" in report
    assert "env HOME=/tmp\n" in report
    attrs = p.container(body["jid"])
    assert attrs is not None
    assert attrs["Config"]["User"] == "1234:2345"
    assert attrs["HostConfig"]["ShmSize"] == 32 * MiB
    assert attrs["Config"]["Labels"]["site"] == "test"
    assert attrs["Config"]["Labels"]["team"] == "pman"


def test_oom_kill_is_reported(cpman: Pman) -> None:
    # OOM-killed after its start: Docker may miss a kill at once (late_memhog)
    body = cpman.body(**late_memhog("256M"), memory_limit=32, type="fs")
    assert cpman.post(body).status_code == 201
    done = cpman.wait(body["jid"])
    assert done["status"] == "finishedWithError", done
    assert "out of memory" in done["message"]
    if cpman.backend == "docker":  # Docker reports the OOM kill itself
        assert done["message"].startswith("killed: out of memory (memory_limit 32 MiB)")
    assert "memhog: allocating 256M" in done["logs"]
    attrs = cpman.container(body["jid"])
    assert attrs is not None and attrs["State"]["ExitCode"] == 137


def test_missing_image_is_400_and_leaves_nothing(cpman: Pman) -> None:
    body = cpman.body(image=f"localhost/pman-no-such-image-{uuid.uuid4().hex[:6]}:1")
    resp = cpman.post(body)
    assert resp.status_code == 400, resp.text
    assert "image" in resp.json()["fields"]
    assert "pman-no-such-image" in resp.json()["message"]
    assert cpman.container(body["jid"]) is None


def test_command_missing_in_image_is_400_and_leaves_nothing(cpman: Pman) -> None:
    body = cpman.body("no-such-program")
    resp = cpman.post(body)
    assert resp.status_code == 400, resp.text
    assert "entrypoint" in resp.json()["fields"]
    assert cpman.container(body["jid"]) is None


def test_gpu_request_the_host_cannot_meet(cpman: Pman) -> None:
    body = cpman.body(gpu_limit=1)
    resp = cpman.post(body)
    assert resp.status_code == 400, resp.text
    assert "gpu_limit" in resp.json()["fields"]
    assert cpman.container(body["jid"]) is None


def test_several_workers_are_refused(cpman: Pman) -> None:
    body = cpman.body(number_of_workers=2)
    resp = cpman.post(body)
    assert resp.status_code == 400
    assert "number_of_workers" in resp.json()["fields"]
    assert cpman.container(body["jid"]) is None


def test_a_job_the_backend_can_never_run_is_refused_before_it_is_recorded(
    make_pman: Callable[..., Pman], backend: str
) -> None:
    """Backend.check: a 400 naming the field, nothing recorded, nothing on the
    engine; also when the job would have waited in pman's queue."""
    refused = [{"number_of_workers": 2}]
    if backend == "podman":
        refused.append({"gpu_limit": 1})
    p = make_pman(backend, PMAN_MAX_RUNNING="1")
    running = p.body("sleeper", args=["30"], type="fs")
    for queue_full in (False, True):
        if queue_full:  # from now on a job pman accepts waits in its queue
            assert p.post(running).json()["status"] == "started"
            waiting = p.body()
            assert p.post(waiting).json()["status"] == "notstarted"
        for fields in refused:
            body = p.body(**fields)
            resp = p.post(body)
            assert resp.status_code == 400, resp.text
            assert set(fields) <= set(resp.json()["fields"]), resp.json()
            assert p.get(body["jid"]).status_code == 404, "recorded all the same"
            assert p.container(body["jid"]) is None
    assert p.delete(running["jid"]).status_code == 204


def test_remove_jobs_no_keeps_the_container(make_pman: Callable[..., Pman], backend: str) -> None:
    p = make_pman(backend, REMOVE_JOBS="no")
    body = p.body()
    assert p.post(body).status_code == 201
    p.wait(body["jid"])
    assert p.delete(body["jid"]).status_code == 204
    assert p.container(body["jid"]) is not None
    assert p.get(body["jid"]).status_code == 200


def test_containers_pman_did_not_create_are_not_jobs(cpman: Pman) -> None:
    assert cpman.engine is not None
    name = f"not-a-pman-job-{uuid.uuid4().hex[:6]}"
    cpman.engine.create_container(TEST_IMAGE, command=["true"], name=name)
    try:
        assert cpman.get(name).status_code == 404
        assert cpman.delete(name).status_code == 404
        assert cpman.container(name) is not None, "pman deleted a container it does not own"
        clash = cpman.post(cpman.body(jid=name))
        assert clash.status_code == 409
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            cpman.engine.remove_container(name, force=True)


@pytest.mark.parametrize("backend", CONTAINER_BACKENDS)
def test_engine_down_is_503_naming_the_engine(
    make_pman: Callable[..., Pman], backend: str, tmp_path: object
) -> None:
    dead = f"unix:///tmp/pman-no-engine-{uuid.uuid4().hex[:6]}.sock"
    p = make_pman(backend, DOCKER_HOST=dead)
    resp = p.post(p.body())
    assert resp.status_code == 503, resp.text
    message = resp.json()["message"]
    assert ("Docker engine" if backend == "docker" else "Podman service") in message
    assert "unreachable" in message
    assert dead in message, "the message must say where pman looked for the engine"
    # polls are answered from the registry, engine or not
    assert p.get("anything").status_code == 404
    health = requests.get(f"{p.url}/health", timeout=10)
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"


def test_engine_rejection_names_the_field_and_leaves_nothing(cpman: Pman) -> None:
    body = cpman.body(memory_limit=1)  # below every engine's minimum (6 MiB)
    resp = cpman.post(body)
    assert resp.status_code == 400, resp.text
    assert "memory_limit" in resp.json()["fields"]
    assert cpman.container(body["jid"]) is None
