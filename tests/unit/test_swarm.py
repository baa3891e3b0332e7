"""The swarm backend without an engine: state table, job state over tasks,
mounts, GPUs, names, the task template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from pman.backends import load_backend
from pman.backends.swarm import (
    TASK_STATES,
    SwarmBackend,
    choose_gpu_kind,
    escape_template,
    job_info,
    job_state,
    nfs_mount,
)
from pman.errors import BackendUnavailable, ConfigError, InvalidJobSpec, UnsupportedOption
from pman.models import JobSpec, JobState, Mounts, Resources
from pman.settings import load_settings

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
_MIB = 1024 * 1024


def task(state: str, slot: int = 1, age: float = 1.0, **status: Any) -> dict[str, Any]:
    created = (NOW - timedelta(seconds=age)).isoformat().replace("+00:00", "Z")
    return {
        "ID": f"t{slot}",
        "Slot": slot,
        "CreatedAt": created,
        "Status": {"State": state, "Timestamp": created, **status},
    }


def test_task_state_table() -> None:
    documented = {
        "new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
        "starting", "running", "complete", "failed", "shutdown", "rejected", "orphaned",
        "remove",
    }  # fmt: skip
    assert set(TASK_STATES) == documented
    assert TASK_STATES["complete"] is JobState.SUCCEEDED
    assert TASK_STATES["failed"] is JobState.FAILED
    assert TASK_STATES["rejected"] is JobState.SYSTEM_ERROR
    assert TASK_STATES["running"] is JobState.RUNNING
    assert TASK_STATES["pending"] is JobState.QUEUED


@pytest.mark.parametrize(
    ("tasks", "workers", "state", "reason"),
    [
        ([], 1, JobState.QUEUED, ""),
        ([task("pending")], 1, JobState.QUEUED, ""),
        ([task("running")], 1, JobState.RUNNING, ""),
        ([task("complete", ContainerStatus={"ExitCode": 0})], 1, JobState.SUCCEEDED, ""),
        # one worker done, the other still to come: not finished
        ([task("complete")], 2, JobState.RUNNING, ""),
        ([task("complete", 1), task("running", 2)], 2, JobState.RUNNING, ""),
        ([task("complete", 1), task("complete", 2)], 2, JobState.SUCCEEDED, ""),
        # a failed worker decides the job only once the others ended too
        ([task("failed", 1), task("running", 2)], 2, JobState.RUNNING, ""),
        ([task("failed", 1), task("complete", 2)], 2, JobState.FAILED, "exit_code"),
        ([task("rejected", 1, Err="No such image: x")], 1, JobState.SYSTEM_ERROR, "rejected"),
        ([task("shutdown")], 1, JobState.CANCELLED, "shutdown"),
        ([task("weird")], 1, JobState.UNKNOWN, "unknown_status"),
    ],
)
def test_job_state_over_tasks(
    tasks: list[dict[str, Any]], workers: int, state: JobState, reason: str
) -> None:
    out = job_state(tasks, workers, 64 * _MIB, 60, NOW)
    assert (out.state, out.reason) == (state, reason)


def test_failure_messages_carry_the_swarm_text() -> None:
    rejected = job_state([task("rejected", Err="No such image: x:1")], 1, 0, 60, NOW)
    assert rejected.message == "rejected by the swarm: No such image: x:1"

    failed = task("failed", 2, Err="task: non-zero exit (3)", ContainerStatus={"ExitCode": 3})
    out = job_state([task("complete", 1), failed], 2, 0, 60, NOW)
    assert (out.state, out.exit_code) == (JobState.FAILED, 3)
    assert out.message.startswith("worker 2: exited with code 3")

    err = "starting container failed: exec: nosuch: executable file not found"
    start = task("failed", Message="starting", Err=err, ContainerStatus={"ExitCode": 127})
    out = job_state([start], 1, 0, 60, NOW)
    assert (out.state, out.reason) == (JobState.SYSTEM_ERROR, "start_failed")
    assert err in out.message

    oom = task("failed", Message="started", ContainerStatus={"ExitCode": 137})
    out = job_state([oom], 1, 32 * _MIB, 60, NOW)
    assert out.state is JobState.FAILED and "out of memory" in out.message
    assert "32 MiB" in out.message
    # no memory limit (IGNORE_LIMITS): a SIGKILL is just an exit code
    assert "out of memory" not in job_state([oom], 1, 0, 60, NOW).message


def test_a_task_pending_too_long_is_a_system_error() -> None:
    err = "no suitable node (insufficient resources on 1 node)"
    young = task("pending", age=10, Err=err)
    assert job_state([young], 1, 0, 60, NOW).state is JobState.QUEUED
    old = task("pending", age=61, Err=err)
    out = job_state([old], 1, 0, 60, NOW)
    assert (out.state, out.reason) == (JobState.SYSTEM_ERROR, "not_scheduled")
    assert err in out.message and "60 s" in out.message
    # with another worker still running, the job waits for it
    assert job_state([old, task("running", 2)], 2, 0, 60, NOW).state is JobState.RUNNING


def test_job_info_from_service_and_tasks() -> None:
    service = {
        "ID": "svc1",
        "CreatedAt": "2026-11-23T09:59:00.123456789Z",
        "Spec": {
            "Name": "job-1",
            "Labels": {"org.chrisproject.pman.fingerprint": "f", "org.chrisproject.pman": "true"},
            "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "img", "Command": ["copyplugin"], "Args": ["/out"]},
                "Resources": {"Limits": {"MemoryBytes": 64 * _MIB}},
            },
        },
    }
    info = job_info(service, [task("complete", 1), task("complete", 2)], 60, NOW)
    assert info.state is JobState.SUCCEEDED and info.exit_code == 0
    assert info.name == "job-1" and info.native_id == "svc1" and info.fingerprint == "f"
    assert info.command == ["copyplugin", "/out"] and info.image == "img"
    assert info.finished_at is not None and info.created_at is not None


def test_nfs_mount_options() -> None:
    ro = nfs_mount("10.0.0.5", "/export/store/key-1/in", "/share/incoming", read_only=True)
    assert ro["Type"] == "volume" and ro["ReadOnly"] is True
    assert ro["Target"] == "/share/incoming"
    config = ro["VolumeOptions"]["DriverConfig"]
    assert config == {
        "Name": "local",
        "Options": {"type": "nfs", "o": "addr=10.0.0.5,ro", "device": ":/export/store/key-1/in"},
    }
    rw = nfs_mount("10.0.0.5", "/export/store/key-1/out", "/share/outgoing", read_only=False)
    assert rw["VolumeOptions"]["DriverConfig"]["Options"]["o"] == "addr=10.0.0.5,rw"
    assert rw["ReadOnly"] is False
    # a volume keeps the options it was created with: other options, other name
    assert ro["Source"] != rw["Source"]
    again = nfs_mount("10.0.0.5", "/export/store/key-1/in", "/share/incoming", read_only=True)
    assert again["Source"] == ro["Source"] and ro["Source"].startswith("pman-nfs-")


def node(*generic: dict[str, Any], state: str = "ready") -> dict[str, Any]:
    return {
        "Status": {"State": state},
        "Spec": {"Availability": "active"},
        "Description": {"Resources": {"NanoCPUs": 1, "GenericResources": list(generic)}},
    }


def test_gpus_come_from_generic_resources_or_are_refused() -> None:
    named = [{"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": f"GPU-{i}"}} for i in range(2)]
    discrete = {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 4}}
    assert choose_gpu_kind([node(*named)], 2) == "NVIDIA-GPU"
    assert choose_gpu_kind([node(*named), node(discrete)], 3) == "gpu"
    with pytest.raises(UnsupportedOption) as e:
        choose_gpu_kind([node(*named)], 3)
    assert "gpu_limit" in e.value.fields and "NVIDIA-GPU=2" in e.value.message
    with pytest.raises(UnsupportedOption):
        choose_gpu_kind([node()], 1)
    # a node that is down cannot ever run it
    with pytest.raises(UnsupportedOption):
        choose_gpu_kind([node(discrete, state="down")], 1)
    # other generic resources are not GPUs
    with pytest.raises(UnsupportedOption):
        choose_gpu_kind([node({"DiscreteResourceSpec": {"Kind": "fpga", "Value": 9}})], 1)


class FakeAPI:
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes


def backend(tmp_path: Path, api: Any = None, **env: str) -> SwarmBackend:
    s = load_settings({"CONTAINER_ENV": "swarm", "STOREBASE": str(tmp_path), **env})
    return SwarmBackend(api, s)


def spec(tmp_path: Path, gpus: int = 0, workers: int = 1, **kw: Any) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="img",
        command=["copyplugin", "/share/incoming", "/share/outgoing"],
        env=["A=1", "B={{not a template}}"],
        resources=Resources(workers, 500, 64, gpus),
        mounts=Mounts("in", "out", tmp_path / "in", tmp_path / "out"),
        plugin_type="ds",
        auid="chris",
        fingerprint="f",
        labels={"org.chrisproject.pman": "true", "team": "x"},
        **kw,
    )


def test_gpu_refusal_names_gpu_limit(tmp_path: Path) -> None:
    b = backend(tmp_path, FakeAPI([node()]))
    with pytest.raises(UnsupportedOption) as e:
        b.task_template(spec(tmp_path, gpus=1))
    assert "gpu_limit" in e.value.fields
    gpu = {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}
    t = backend(tmp_path, FakeAPI([node(gpu)])).task_template(spec(tmp_path, gpus=1))
    assert t["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "gpu", "Value": 1}}
    ]


def test_task_template(tmp_path: Path) -> None:
    b = backend(tmp_path, SHM_SIZE="128")
    t = b.task_template(spec(tmp_path, workers=3, uid=1000, gid=1001))
    c = t["ContainerSpec"]
    assert c["Command"] == ["copyplugin"]
    assert c["Args"] == ["/share/incoming", "/share/outgoing"]
    assert c["User"] == "1000:1001"
    assert c["Labels"]["org.chrisproject.pman"] == "true"
    # a job's own braces are not a template for the swarm
    assert 'B={{"{{"}}not a template}}' in c["Env"]
    assert "PMAN_WORKER_INDEX={{.Task.Slot}}" in c["Env"]
    assert "PMAN_NUMBER_OF_WORKERS=3" in c["Env"]
    mounts = {m["Target"]: m for m in c["Mounts"]}
    assert mounts["/share/incoming"]["Source"] == str(tmp_path / "in")
    assert mounts["/share/incoming"]["ReadOnly"] is True
    assert mounts["/share/outgoing"]["ReadOnly"] is False
    assert mounts["/dev/shm"]["Type"] == "tmpfs"
    assert mounts["/dev/shm"]["TmpfsOptions"]["SizeBytes"] == 128 * _MIB
    limits = {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * _MIB}
    assert t["Resources"] == {"Limits": limits, "Reservations": limits}
    assert t["RestartPolicy"]["Condition"] == "none"

    ignoring = backend(tmp_path, IGNORE_LIMITS="true").task_template(spec(tmp_path))
    assert "Resources" not in ignoring or not ignoring["Resources"]

    group_only = b.task_template(spec(tmp_path, gid=1001))["ContainerSpec"]
    assert "User" not in group_only and group_only["Groups"] == ["1001"]


def test_nfs_storage_in_the_template(tmp_path: Path) -> None:
    b = backend(tmp_path, STORAGE_TYPE="nfs", NFS_SERVER="nfs.example", STOREBASE="/export")
    s = spec(tmp_path)
    s = JobSpec(**{**s.__dict__, "mounts": Mounts("key/in", "key/out")})
    mounts = {m["Target"]: m for m in b.task_template(s)["ContainerSpec"]["Mounts"]}
    opts = mounts["/share/incoming"]["VolumeOptions"]["DriverConfig"]["Options"]
    assert opts == {"type": "nfs", "o": "addr=nfs.example,ro", "device": ":/export/key/in"}
    opts = mounts["/share/outgoing"]["VolumeOptions"]["DriverConfig"]["Options"]
    assert opts["device"] == ":/export/key/out" and opts["o"] == "addr=nfs.example,rw"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("pman-job_1", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("has.dot", False),
        ("ends-", False),
        ("-starts", False),
        ("_starts", False),
        ("sp ace", False),
    ],
)
def test_service_name_rule(tmp_path: Path, name: str, ok: bool) -> None:
    b = backend(tmp_path)
    if ok:
        b.check_name(name)
    else:
        with pytest.raises(InvalidJobSpec) as e:
            b.check_name(name)
        assert "jid" in e.value.fields and "63" in e.value.message


def test_escape_template() -> None:
    assert escape_template("plain") == "plain"
    assert escape_template("a{{b}}c") == 'a{{"{{"}}b}}c'


def test_settings_for_swarm(tmp_path: Path) -> None:
    s = load_settings(
        {"CONTAINER_ENV": "swarm", "STORAGE_TYPE": "docker_local_volume", "VOLUME_NAME": "v"}
    )
    assert s.swarm_pending_timeout == 60.0
    assert s.docker_environment()["DOCKER_HOST"] == "unix:///var/run/docker.sock"
    assert isinstance(load_backend("swarm", s), SwarmBackend)  # offline
    s = load_settings(
        {"CONTAINER_ENV": "swarm", "STOREBASE": "/x", "PMAN_SWARM_PENDING_TIMEOUT": "5"}
    )
    assert s.swarm_pending_timeout == 5.0
    with pytest.raises(ConfigError) as e:
        load_settings(
            {"CONTAINER_ENV": "swarm", "STOREBASE": "/x", "PMAN_SWARM_PENDING_TIMEOUT": "0"}
        )
    assert "PMAN_SWARM_PENDING_TIMEOUT" in e.value.fields


class PingAPI:
    def __init__(self, swarm: dict[str, Any]) -> None:
        self.swarm = swarm

    def ping(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return {"Swarm": self.swarm}


def test_ping_refuses_a_node_that_is_not_a_swarm_manager(tmp_path: Path) -> None:
    backend(tmp_path, PingAPI({"LocalNodeState": "active", "ControlAvailable": True})).ping()
    for swarm in (
        {"LocalNodeState": "inactive", "ControlAvailable": False},
        {"LocalNodeState": "active", "ControlAvailable": False},  # a worker node
    ):
        with pytest.raises(BackendUnavailable) as e:
            backend(tmp_path, PingAPI(swarm)).ping()
        assert "not a swarm manager" in e.value.message and "docker swarm init" in e.value.message


def test_engine_saying_not_a_manager_is_unavailable(tmp_path: Path) -> None:
    response = requests.Response()
    response.status_code = 503
    e = docker.errors.APIError(
        "503", response=response, explanation="This node is not a swarm manager. Use ..."
    )
    with pytest.raises(BackendUnavailable, match="not a swarm manager"):
        backend(tmp_path)._raise(e, "creating service 'x'")
