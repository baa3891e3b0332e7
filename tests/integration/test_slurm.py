"""The slurm backend against a real one-node SLURM cluster, through pman's HTTP API.

scripts/slurm-up.sh starts the cluster (munged, slurmctld, slurmd; cgroup v1
where the machine has it, so --mem is enforced); when none answers, these
tests skip on a laptop and fail in CI. The docker runtime's containers run on
this node's Docker engine with the test image of scripts/build-test-images.sh.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pman.backends.slurm.settings import SlurmSettings
from tests.helpers import late_memhog
from tests.integration.conftest import Pman

pytestmark = pytest.mark.slurm


def squeue(jid: str) -> list[dict[str, str]]:
    """SLURM's own view of the jobs named ``jid`` (finished ones too)."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", f"--name={jid}", "-O", "JobID:|,State:|,Comment:|"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        job_id, state, comment, _ = line.split("|")
        rows.append({"id": job_id.strip(), "state": state.strip(), "comment": comment.strip()})
    return rows


def job_dir(p: Pman, jid: str) -> Path:
    return jobs_dir(p) / jid


def jobs_dir(p: Pman) -> Path:
    """SLURM_JOB_DIR as the pman under test has it."""
    job_dir = p.service.settings.resource.engine_as(SlurmSettings).job_dir
    assert job_dir is not None
    return job_dir


def containers_of(p: Pman, jid: str) -> list[dict[str, Any]]:
    """The docker containers the job's workers run in (named ``<jid>-<SLURM job id>``)."""
    assert p.engine is not None
    found = p.engine.containers(all=True, filters={"name": f"{jid}-"})
    return [c for c in found if any(n.lstrip("/").startswith(f"{jid}-") for n in c["Names"])]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.2)


def test_lifecycle_with_docker_runtime(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker", JOB_LABELS="team=pman-tests")
    body = p.body(args=["--prefix", "out-", "--env", "GREETING"], env=["GREETING=hello world"])
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    jid = body["jid"]
    assert resp.json()["status"] in ("notstarted", "started")

    data = p.wait(jid)
    assert data["status"] == "finishedSuccessfully", data
    assert data["message"] == "exited with code 0"
    assert "copied data.txt -> out-data.txt" in data["logs"]
    out = p.out(body)
    assert (out / "out-data.txt").read_text() == "some data\n"
    report = (out / "report.txt").read_text()
    assert "input read-only" in report
    assert "env GREETING=hello world" in report

    # SLURM's view: one job named after the jid, marked as pman's
    rows = squeue(jid)
    assert len(rows) == 1 and rows[0]["state"] == "COMPLETED", rows
    assert rows[0]["comment"].startswith("pman;")
    assert containers_of(p, jid) == []  # the script removed its container

    assert p.delete(jid).status_code == 204
    assert not job_dir(p, jid).exists()
    assert p.delete(jid).status_code in (204, 404)


def test_runtime_none_runs_on_the_node_with_real_paths(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="none")
    body = p.body(
        args=["--prefix", "n-", "--env", "WHERE", "--env", "PMAN_OUTGOING"],
        env=["WHERE=/share/outgoing/sub"],
    )
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    out = p.out(body)
    assert (out / "n-data.txt").read_text() == "some data\n"
    report = (out / "report.txt").read_text()
    # /share/... in arguments and env values become the real folders
    assert f"env WHERE={out}/sub" in report
    assert f"env PMAN_OUTGOING={out}" in report
    assert f"out={out}" in data["logs"]
    # the command line pman reports is the job's own, with the container paths
    assert data["cmd"].endswith("/share/incoming /share/outgoing")


def test_failing_job_reports_its_exit_code_to_the_tracker(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="none")
    bad = p.body("failplugin")
    assert p.post(bad).status_code == 201
    # no GET: the tracker alone follows SLURM
    rec = p.wait_record(bad["jid"])
    assert rec.state.name == "FAILED"
    assert rec.exit_code == 3
    assert rec.message == "exited with code 3", rec.message
    data = p.get(bad["jid"]).json()
    assert data["status"] == "finishedWithError"
    assert "failing on purpose" in data["logs"]
    assert squeue(bad["jid"])[0]["state"] == "FAILED"


def test_memory_limit_enforced_by_slurm(make_pman: Callable[..., Pman]) -> None:
    """With runtime none the job's processes are in SLURM's memory cgroup:
    exceeding --mem ends the job OUT_OF_MEMORY (slurm-up.sh's cgroup v1)."""
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="none")
    body = p.body("memhog", args=["--size", "256M"], memory_limit=32)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedWithError", data
    assert "out of memory (memory_limit 32 MiB)" in data["message"], data
    assert "OUT_OF_MEMORY" in data["message"]
    assert squeue(body["jid"])[0]["state"] == "OUT_OF_MEMORY"


def test_memory_limit_of_a_docker_container(make_pman: Callable[..., Pman]) -> None:
    """A docker container is outside the job's cgroup: the script gives docker
    the limit and reports docker's OOM flag."""
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker")
    # OOM-killed after its start: Docker may miss a kill at once (late_memhog)
    body = p.body(**late_memhog("256M"), memory_limit=32)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedWithError", data
    assert "killed: out of memory (memory_limit 32 MiB), exit code 137" in data["message"], data


def test_delete_cancels_and_no_container_survives(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker")
    body = p.body("sleeper", args=["600"])
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    jid = body["jid"]
    p.wait(jid, until=("started",), timeout=60)
    running = wait_for(
        lambda: [c for c in containers_of(p, jid) if c["State"] == "running"], 60, "container"
    )
    assert len(running) == 1

    assert p.delete(jid).status_code == 204
    assert not job_dir(p, jid).exists()
    # SLURM signals the script, whose handler removes the container
    wait_for(lambda: containers_of(p, jid) == [], 60, "the container's removal")
    wait_for(lambda: squeue(jid)[0]["state"] == "CANCELLED", 60, "CANCELLED")
    # a deleted job is gone for pman, though SLURM keeps its record
    assert p.get(jid).status_code == 404
    assert jid not in {i.name for i in p.service.backend.list()}


@pytest.mark.timeout(400)  # 60-90 s here; its own waits allow up to 240 s
def test_timeout_is_reported_and_no_container_survives(make_pman: Callable[..., Pman]) -> None:
    """TIMELIMIT_MINUTES=1: SLURM ends the job 60-90 s after it starts (its
    time-limit check runs every 30 s), signalling the script, which removes
    the container before SLURM's SIGKILL."""
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker", TIMELIMIT_MINUTES="1")
    body = p.body("sleeper", args=["600"])
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    jid = body["jid"]
    wait_for(lambda: containers_of(p, jid), 60, "the container")
    data = p.wait(jid, timeout=180)
    assert data["status"] == "finishedWithError", data
    assert data["message"] == "killed: time limit of 1 min reached (SLURM state TIMEOUT)", data
    assert "DUE TO TIME LIMIT" in data["logs"]
    assert squeue(jid)[0]["state"] == "TIMEOUT"
    assert containers_of(p, jid) == []


def test_two_workers_form_a_job_array(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker")
    # command: sh -c SCRIPT sh OUT ($1 is the output folder)
    script = (
        'echo "worker $PMAN_WORKER_INDEX of $PMAN_NUMBER_OF_WORKERS"; '
        'echo "$PMAN_WORKER_INDEX" > "$1/worker-$PMAN_WORKER_INDEX"'
    )
    body = p.body(
        entrypoint=["sh", "-c", script, "sh"],
        args=[],
        number_of_workers=2,
        cpu_limit=500,
        memory_limit=32,
    )
    body["type"] = "fs"
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    data = p.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    assert data["message"] == "all 2 workers exited with 0"
    out = p.out(body)
    assert sorted(f.name for f in out.iterdir()) == ["worker-1", "worker-2"]
    assert "worker 1 of 2" in data["logs"] and "worker 2 of 2" in data["logs"]
    rows = squeue(body["jid"])
    assert len(rows) == 2 and {r["state"] for r in rows} == {"COMPLETED"}, rows


def test_a_failed_worker_fails_the_array_job(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="none")
    script = '[ "$PMAN_WORKER_INDEX" = 2 ] && exit 5; sleep 1; echo "worker $PMAN_WORKER_INDEX ran"'
    body = p.body(
        entrypoint=["sh", "-c", script, "sh"],
        args=[],
        number_of_workers=2,
        cpu_limit=500,
        memory_limit=32,
    )
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedWithError", data
    assert data["message"] == "worker 2: exited with code 5", data
    assert "worker 1 ran" in data["logs"]


def test_missing_image_is_a_start_failure(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="docker")
    body = p.body(image="localhost/pman-no-such-image:latest")
    assert p.post(body).status_code == 201
    rec = p.wait_record(body["jid"])
    assert rec.state.name == "SYSTEM_ERROR", rec
    assert "could not start the container" in rec.message
    data = p.get(body["jid"]).json()
    assert data["status"] == "finishedWithError"


def test_requests_the_cluster_cannot_meet_are_400(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="none")
    # the node has 2 CPUs and some GiB of memory; EnforcePartLimits=ALL refuses at once
    resp = p.post(p.body(memory_limit=64 * 1024 * 1024))
    assert resp.status_code == 400, resp.text
    assert set(resp.json()["fields"]) == {"memory_limit"}, resp.json()
    resp = p.post(p.body(cpu_limit=64_000))
    assert resp.status_code == 400, resp.text
    assert set(resp.json()["fields"]) == {"cpu_limit"}, resp.json()
    resp = p.post(p.body(jid="bad/name"))
    assert resp.status_code == 400 and "jid" in resp.text
    # a refused job leaves no folder behind
    assert list(jobs_dir(p).iterdir()) == []


def test_unreachable_slurmctld_is_503(make_pman: Callable[..., Pman], tmp_path: Path) -> None:
    conf = Path("/etc/slurm/slurm.conf").read_text()
    bad = tmp_path / "slurm.conf"
    # nothing listens on this port: every command fails to reach slurmctld
    bad.write_text(conf.replace("SlurmctldPort=6817", "SlurmctldPort=6899"))
    p = make_pman(
        "slurm", SLURM_CONTAINER_RUNTIME="none", SLURM_CONF=str(bad), PMAN_ENGINE_TIMEOUT="60"
    )
    started = time.monotonic()
    resp = p.post(p.body())
    assert resp.status_code == 503, resp.text
    assert "slurmctld" in resp.json()["message"]
    assert time.monotonic() - started < 60
    health = p.get("x").status_code  # an unknown job is still a 404 from the registry
    assert health == 404


def podman_containers(jid: str) -> list[str]:
    out = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"name=^{jid}-", "--format", "{{.Names}} {{.State}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split("\n")[:-1]


def test_podman_runtime_runs_and_cancels(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("slurm", SLURM_CONTAINER_RUNTIME="podman")
    body = p.body()
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    assert "input read-only" in (p.out(body) / "report.txt").read_text()
    assert podman_containers(body["jid"]) == []

    sleeper = p.body("sleeper", args=["600"])
    sleeper["type"] = "fs"
    assert p.post(sleeper).status_code == 201
    jid = sleeper["jid"]
    wait_for(
        lambda: any(
            c.split(" ", 1)[1].startswith(("Up", "running")) for c in podman_containers(jid)
        ),
        60,
        "running",
    )
    assert p.delete(jid).status_code == 204
    wait_for(lambda: podman_containers(jid) == [], 60, "the container's removal")


@pytest.mark.parametrize(
    ("runtime", "change", "field"),
    [
        # apptainer passes env through APPTAINERENV_<name>: a name must be a variable's
        ("apptainer", {"env": ["NOT-A-NAME=1"]}, "env"),
        # docker's -v cannot bind-mount a folder whose path has a ':'
        ("docker", {"input_dir": "in:put"}, "input_dir"),
    ],
)
def test_a_job_the_script_cannot_express_is_refused_before_it_is_recorded(
    make_pman: Callable[..., Pman], runtime: str, change: dict[str, Any], field: str
) -> None:
    # --begin keeps the first job pending in SLURM: it holds pman's one running place
    p = make_pman(
        "slurm",
        SLURM_CONTAINER_RUNTIME=runtime,
        PMAN_MAX_RUNNING="1",
        SLURM_EXTRA_OPTIONS="--begin=now+1hour",
    )
    (p.storebase / "in:put").mkdir()
    (p.storebase / "in:put" / "data.txt").write_text("some data\n")

    def refused() -> None:
        bad = p.body(**change)
        resp = p.post(bad)
        assert resp.status_code == 400, resp.text
        assert set(resp.json()["fields"]) == {field}, resp.json()
        assert p.get(bad["jid"]).status_code == 404  # never recorded
        assert not job_dir(p, bad["jid"]).exists()
        assert squeue(bad["jid"]) == []

    refused()
    holder, waiting = p.body(), p.body()
    assert p.post(holder).status_code == 201
    resp = p.post(waiting)
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "notstarted"
    assert resp.json()["message"].startswith("queued by pman"), resp.json()
    # with pman's queue full, such a job would have waited in it: refused all the same
    refused()
    for jid in (waiting["jid"], holder["jid"]):
        assert p.delete(jid).status_code == 204
