"""The swarm backend's service builder without an engine: NFS mounts, GPUs from
the nodes' generic resources, templates escaped (moved from tests/unit/test_swarm.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pman.backends.swarm.config import SwarmConfig
from pman.backends.swarm.manifest import (
    choose_gpu_kind,
    escape_template,
    nfs_mount,
    task_template,
)
from pman.errors import UnsupportedOption
from pman.settings import load_settings
from tests.unit.backends.docker.test_manifest import job as docker_job


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


def test_escape_template() -> None:
    assert escape_template("plain") == "plain"
    assert escape_template("a{{b}}c") == 'a{{"{{"}}b}}c'


# ---- hardening options given to the engine (moved from tests/unit/test_limits.py,
# test_docker_and_swarm_confinement_options: the docker half is in ../docker/test_manifest.py)
def test_swarm_confinement_options(tmp_path: Path) -> None:
    job = docker_job(tmp_path)
    for env, added, read_only in (
        ({}, None, False),
        ({"PMAN_CAP_ADD": "chown", "PMAN_READ_ONLY_ROOTFS": "yes"}, ["CAP_CHOWN"], True),
    ):
        swarm = load_settings({"CONTAINER_ENV": "swarm", "STOREBASE": str(tmp_path), **env})
        config = SwarmConfig.from_settings(swarm)
        c = task_template(job, config, str(tmp_path), None)["ContainerSpec"]
        assert c["CapabilityDrop"] == ["ALL"]
        assert c.get("CapabilityAdd") == added
        assert bool(c.get("ReadOnly")) is read_only
        tmp = [m for m in c["Mounts"] if m["Target"] == "/tmp"]
        assert bool(tmp) is read_only and all(m["Type"] == "tmpfs" for m in tmp)
