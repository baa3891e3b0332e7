"""A job as a container create request, without an engine."""

from __future__ import annotations

from pathlib import Path

from pman.backends.docker import manifest
from pman.backends.docker.config import DockerConfig
from pman.models import JobSpec, Mounts, Resources
from pman.settings import load_settings

MIB = 1024 * 1024


def job(tmp_path: Path, **kw: object) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="img",
        command=["copyplugin", "/share/outgoing"],
        env=[],
        resources=Resources(1, 500, 64, 0),
        mounts=Mounts("in", "out", tmp_path / "in", tmp_path / "out"),
        plugin_type="fs",
        auid="chris",
        fingerprint="f",
        **kw,  # type: ignore[arg-type]
    )


def options(tmp_path: Path, **env: str) -> DockerConfig:
    s = load_settings({"CONTAINER_ENV": "docker", "STOREBASE": str(tmp_path), **env})
    return DockerConfig.from_settings(s)


# ---- hardening options given to the engine (moved from tests/unit/test_limits.py,
# test_docker_and_swarm_confinement_options: the swarm half is in ../swarm/test_manifest.py)
def test_docker_confinement_options(tmp_path: Path) -> None:
    for env, added, read_only in (
        ({}, None, False),
        ({"PMAN_CAP_ADD": "chown", "PMAN_READ_ONLY_ROOTFS": "yes"}, ["CAP_CHOWN"], True),
    ):
        hc = manifest.host_config(job(tmp_path), options(tmp_path, **env).jobs, "/x", "1.41")
        assert hc["CapDrop"] == ["ALL"]
        assert hc.get("CapAdd") == added
        assert hc["SecurityOpt"] == ["no-new-privileges"]
        assert bool(hc.get("ReadonlyRootfs")) is read_only
        assert ("/tmp" in hc.get("Tmpfs", {})) is read_only


def test_folders_limits_and_user(tmp_path: Path) -> None:
    hc = manifest.host_config(job(tmp_path), options(tmp_path, SHM_SIZE="32").jobs, "/x", "1.41")
    assert hc["Binds"] == [
        f"{tmp_path / 'in'}:/share/incoming:ro",
        f"{tmp_path / 'out'}:/share/outgoing:rw",
    ]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"]) == (64 * MIB, 64 * MIB, 500_000_000)
    assert hc["ShmSize"] == 32 * MIB and hc["RestartPolicy"] == {"Name": "no"}
    assert "DeviceRequests" not in hc and "GroupAdd" not in hc

    # folders under STOREBASE on the engine's host (a docker volume's folder)
    in_volume = JobSpec(**{**job(tmp_path).__dict__, "mounts": Mounts("k/in", "k/out")})
    hc = manifest.host_config(in_volume, options(tmp_path).jobs, "/var/lib/v", "1.41")
    assert hc["Binds"] == [
        "/var/lib/v/k/in:/share/incoming:ro",
        "/var/lib/v/k/out:/share/outgoing:rw",
    ]

    ignoring = options(tmp_path, IGNORE_LIMITS="yes").jobs
    gpus = JobSpec(**{**job(tmp_path, gid=7).__dict__, "resources": Resources(1, 500, 64, 2)})
    hc = manifest.host_config(gpus, ignoring, "/x", "1.41")
    assert "Memory" not in hc and "NanoCpus" not in hc
    assert hc["DeviceRequests"][0]["Count"] == 2 and hc["GroupAdd"] == ["7"]

    create = manifest.create_options(job(tmp_path, uid=1000, gid=1001))
    assert create["entrypoint"] == ["copyplugin"] and create["command"] == ["/share/outgoing"]
    assert create["user"] == "1000:1001" and create["name"] == "job-1"
    assert manifest.create_options(job(tmp_path, uid=5))["user"] == "5"
    assert manifest.create_options(job(tmp_path))["user"] is None
