"""A job as the Engine API's container create request: its host config
(folders, limits, confinement) and its create options. Pure: no engine call."""

from __future__ import annotations

from typing import Any

from docker.types import DeviceRequest, HostConfig

from pman.backends.docker.config import JobOptions
from pman.models import INCOMING, OUTGOING, JobSpec, Mounts

MIB = 1024 * 1024


def job_folders(mounts: Mounts, storebase: str) -> tuple[str, str]:
    """The host folders of the job's input and output: the ones the request
    resolved, or its folders under STOREBASE on the engine's host."""
    m = mounts
    incoming = str(m.input_host) if m.input_host else f"{storebase}/{m.input_dir}".rstrip("/")
    outgoing = str(m.output_host) if m.output_host else f"{storebase}/{m.output_dir}"
    return incoming, outgoing


def user_of(spec: JobSpec) -> str | None:
    """The job's ``uid[:gid]`` (CONTAINER_USER), None for the image's user."""
    if spec.uid is None:
        return None
    return str(spec.uid) if spec.gid is None else f"{spec.uid}:{spec.gid}"


def confinement(options: JobOptions) -> dict[str, Any]:
    """HostConfig options that confine a job: every capability dropped but those
    PMAN_CAP_ADD gives back, no privilege gain through setuid files
    (no-new-privileges), and with PMAN_READ_ONLY_ROOTFS a read-only root
    filesystem with a writable tmpfs at /tmp (counted in the job's memory)."""
    hc: dict[str, Any] = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
    if options.cap_add:
        hc["cap_add"] = list(options.cap_add)
    if options.read_only_rootfs:
        hc["read_only"] = True
        hc["tmpfs"] = {"/tmp": "rw,nosuid,nodev,mode=1777"}
    return hc


def host_config(
    spec: JobSpec, options: JobOptions, storebase: str, api_version: str
) -> dict[str, Any]:
    """The container's HostConfig as Engine API ``api_version`` spells it
    (what the SDK's ``create_host_config`` gives)."""
    incoming, outgoing = job_folders(spec.mounts, storebase)
    hc: dict[str, Any] = {
        "binds": [f"{incoming}:{INCOMING}:ro", f"{outgoing}:{OUTGOING}:rw"],
        "restart_policy": {"Name": "no"},
        **confinement(options),
    }
    r = spec.resources
    if not options.ignore_limits:
        hc["mem_limit"] = r.memory_limit * MIB
        # no swap on top: the limit is the memory the job gets
        hc["memswap_limit"] = r.memory_limit * MIB
        hc["nano_cpus"] = r.cpu_limit * 1_000_000
    if r.gpu_limit > 0:
        hc["device_requests"] = [DeviceRequest(count=r.gpu_limit, capabilities=[["gpu"]])]
    if options.shm_size is not None:
        hc["shm_size"] = options.shm_size * MIB
    if spec.uid is None and spec.gid is not None:
        hc["group_add"] = [str(spec.gid)]
    return HostConfig(version=api_version, **hc)


def create_options(spec: JobSpec) -> dict[str, Any]:
    """The SDK's ``create_container`` arguments but the host config."""
    return {
        "image": spec.image,
        "entrypoint": spec.command[:1],
        "command": spec.command[1:],
        "name": spec.name,
        "environment": spec.env,
        "labels": spec.labels,
        "user": user_of(spec),
        "detach": True,
    }
