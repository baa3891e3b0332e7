"""The swarm backend without an engine: the task template it builds, GPUs
refused, names, settings, pings and errors (moved from tests/unit/test_swarm.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from pman.backends import load_backend
from pman.backends.swarm import SwarmBackend
from pman.backends.swarm.config import SwarmConfig
from pman.backends.swarm.settings import SwarmSettings
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
from pman.models import JobSpec, Mounts, Resources
from pman.settings import load_settings
from tests.unit.backends.docker.scripted import ScriptedAPI, api_error
from tests.unit.backends.swarm.test_manifest import node

_MIB = 1024 * 1024


class FakeAPI:
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self._nodes = nodes

    def nodes(self) -> list[dict[str, Any]]:
        return self._nodes


def backend(tmp_path: Path, api: Any = None, **env: str) -> SwarmBackend:
    s = load_settings({"CONTAINER_ENV": "swarm", "STOREBASE": str(tmp_path), **env})
    return SwarmBackend(SwarmConfig.from_settings(s), api)


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


def test_settings_for_swarm(tmp_path: Path) -> None:
    s = load_settings(
        {"CONTAINER_ENV": "swarm", "STORAGE_TYPE": "docker_local_volume", "VOLUME_NAME": "v"}
    )
    assert s.resource.engine_as(SwarmSettings).pending_timeout == 60.0
    assert s.resource.engine_as(SwarmSettings).environment()["DOCKER_HOST"] == (
        "unix:///var/run/docker.sock"
    )
    assert isinstance(load_backend("swarm", s), SwarmBackend)  # offline
    s = load_settings(
        {"CONTAINER_ENV": "swarm", "STOREBASE": "/x", "PMAN_SWARM_PENDING_TIMEOUT": "5"}
    )
    assert s.resource.engine_as(SwarmSettings).pending_timeout == 5.0
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
    # the swarm backend's errors are the docker SDK's, translated in one place
    errors = backend(tmp_path).errors
    with (
        pytest.raises(BackendUnavailable, match="not a swarm manager"),
        errors.doing("creating service 'x'"),
    ):
        raise e


def service(name: str = "job-1") -> dict[str, Any]:
    return {
        "ID": "svc1",
        "Version": {"Index": 7},
        "CreatedAt": "2026-11-23T09:59:00Z",
        "Spec": {
            "Name": name,
            "Labels": {"org.chrisproject.pman": "true"},
            "Mode": {"Replicated": {"Replicas": 1}},
            "TaskTemplate": {"Resources": {"Limits": {"MemoryBytes": 32 * _MIB}}},
        },
    }


def killed_task() -> dict[str, Any]:
    status = {
        "State": "failed",
        "Message": "started",
        "Timestamp": "2026-11-23T10:00:00Z",
        "ContainerStatus": {"ExitCode": 137, "ContainerID": "c1"},
    }
    return {"ID": "t1", "Slot": 1, "CreatedAt": "2026-11-23T09:59:01Z", "Status": status}


def test_a_worker_killed_for_memory_is_oom_killed(tmp_path: Path) -> None:
    api = ScriptedAPI(
        inspect_service=[service()],
        tasks=[[killed_task()]],
        inspect_container=[{"State": {"OOMKilled": True}}],
    )
    info = backend(tmp_path, api).get("job-1")
    assert api.calls == ["inspect_service", "tasks", "inspect_container"]
    assert info.reason == "oom_killed"
    assert info.message == "killed: out of memory (memory_limit 32 MiB), exit code 137"
    # a container on another node (not found here) leaves the likely cause
    api = ScriptedAPI(
        inspect_service=[service()],
        tasks=[[killed_task()]],
        inspect_container=[api_error(docker.errors.NotFound, 404)],
    )
    assert backend(tmp_path, api).get("job-1").reason == "killed"


def test_services_pman_did_not_make_are_no_jobs(tmp_path: Path) -> None:
    stranger = service()
    stranger["Spec"]["Labels"] = {}
    by_prefix = service("job-1-other")  # inspect matches id prefixes too
    api = ScriptedAPI(
        inspect_service=[stranger, by_prefix, api_error(docker.errors.NotFound, 404), stranger]
    )
    b = backend(tmp_path, api)
    for _ in range(3):
        with pytest.raises(JobNotFound) as e:
            b.get("job-1")
        assert e.value.message == "no job named 'job-1' on the Docker swarm manager"
    b.delete("job-1")
    assert "remove_service" not in api.calls


def test_a_taken_service_name_is_job_exists(tmp_path: Path) -> None:
    api = ScriptedAPI(
        create_service=[api_error(docker.errors.APIError, 409)],
        inspect_service=[service()],
        tasks=[[]],
    )
    with pytest.raises(JobExists) as e:
        backend(tmp_path, api).submit(spec(tmp_path))
    assert e.value.message == "a service named 'job-1' exists already"
    assert e.value.existing is not None and e.value.existing.name == "job-1"


def test_delete_removes_the_service_and_its_containers_here(tmp_path: Path) -> None:
    api = ScriptedAPI(
        inspect_service=[service()],
        remove_service=[api_error(docker.errors.NotFound, 404)],
        containers=[[{"Id": "c1"}, {"Id": "c2"}, {"Id": "c3"}]],
        # gone meanwhile, being removed by the swarm already: both fine
        remove_container=[
            api_error(docker.errors.NotFound, 404),
            api_error(docker.errors.APIError, 409),
        ],
    )
    backend(tmp_path, api).delete("job-1")
    assert api.calls == [
        "inspect_service",
        "remove_service",
        "containers",
        "remove_container",
        "remove_container",
        "remove_container",
    ]
    api = ScriptedAPI(
        inspect_service=[service()],
        containers=[[{"Id": "c1"}]],
        remove_container=[api_error(docker.errors.APIError, 500)],
    )
    with pytest.raises(BackendError, match="removing a container of 'job-1'"):
        backend(tmp_path, api).delete("job-1")


def test_cancel_scales_to_zero_unless_finished(tmp_path: Path) -> None:
    running = dict(killed_task(), Status={"State": "running", "Timestamp": "2026-11-23T10:00:00Z"})
    api = ScriptedAPI(inspect_service=[service()], tasks=[[running]])
    backend(tmp_path, api).cancel("job-1")
    assert api.calls == ["inspect_service", "tasks", "update_service"]
    api = ScriptedAPI(inspect_service=[service()], tasks=[[killed_task()]])
    backend(tmp_path, api).cancel("job-1")
    assert "update_service" not in api.calls


def test_list_active_is_the_containers_list_it_always_was(tmp_path: Path) -> None:
    """Kept from when this backend inherited the docker backend's: one call
    listing pman's unfinished containers (the tasks' containers)."""
    api = ScriptedAPI(containers=[[]])
    assert backend(tmp_path, api).list_active() == []
    assert api.calls == ["containers"]


def test_events_of_containers_and_services(tmp_path: Path) -> None:
    stream = [
        {"Type": "service", "Action": "update", "Actor": {"Attributes": {"name": "job-1"}}},
        {"Type": "service", "Action": "remove", "Actor": {"Attributes": {"name": "job-1"}}},
        {"Type": "container", "Action": "die", "Actor": {"Attributes": {"name": "x"}}},
    ]
    api = ScriptedAPI(events=[iter(stream)])
    assert list(backend(tmp_path, api).watch()) == ["", "job-1"]
