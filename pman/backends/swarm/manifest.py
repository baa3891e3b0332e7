"""A job as a swarm service: its task template (container, mounts, resources,
restart policy) and its mode. Pure: the engine's answers it needs (the
storage folder, the nodes' GPUs) are given to it.

A job of N workers is a service in "replicated" mode with N replicas and
restart condition "none": each worker runs exactly once, whatever it exits
with, and nothing brings it back. Docker's own job mode ("replicated-job",
API 1.41) was tried first and is NOT used: on Docker 20.10 a replicated job
of two or more tasks re-runs a failed task for ever, ignoring the restart
policy, and the tasks and containers of a removed job linger
(moby/moby#42789).

Each worker learns its index from ``PMAN_WORKER_INDEX``, the task's slot
``{{.Task.Slot}}``: 1..N, one per worker (replicated services number their
slots from 1), and the number of workers from ``PMAN_NUMBER_OF_WORKERS``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from docker.types import (
    ContainerSpec,
    DriverConfig,
    Mount,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from pman.backends.docker.manifest import MIB, job_folders, user_of
from pman.backends.swarm.config import SwarmConfig
from pman.errors import UnsupportedOption
from pman.models import INCOMING, OUTGOING, JobSpec

#: a worker's index 1..N: the slot of its task, which the swarm expands in env values
WORKER_INDEX_TEMPLATE = "{{.Task.Slot}}"


def escape_template(text: str) -> str:
    """``text`` as a Go template that expands to itself: the swarm expands
    templates in env values and mount sources, and a job's own ``{{`` must
    reach it unchanged."""
    return text.replace("{{", '{{"{{"}}')


def nfs_mount(server: str, path: str, target: str, read_only: bool) -> Mount:
    """A volume of the local driver that mounts ``server:path`` over NFS on
    whichever node runs the task. Its name digests the options, as a volume
    that exists already keeps the options it was created with."""
    mode = "ro" if read_only else "rw"
    options = {"type": "nfs", "o": f"addr={server},{mode}", "device": f":{path}"}
    digest = hashlib.sha256(f"{server}\0{path}\0{mode}".encode()).hexdigest()[:24]
    return Mount(
        target,
        f"pman-nfs-{digest}",
        type="volume",
        read_only=read_only,
        driver_config=DriverConfig("local", options),
    )


def gpu_kinds(nodes: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The most GPUs any one node advertises, by generic resource kind.

    Nodes advertise generic resources as ``DiscreteResourceSpec`` (a count)
    or one ``NamedResourceSpec`` per device (dockerd's node-generic-resources,
    e.g. ``NVIDIA-GPU=GPU-uuid``); a kind naming "gpu" counts as GPUs.
    """
    best: dict[str, int] = {}
    for node in nodes:
        if (node.get("Status") or {}).get("State", "ready") != "ready":
            continue
        if (node.get("Spec") or {}).get("Availability", "active") != "active":
            continue
        counts: dict[str, int] = {}
        resources = (node.get("Description") or {}).get("Resources") or {}
        for res in resources.get("GenericResources") or []:
            for key, spec in res.items():
                kind = str(spec.get("Kind", ""))
                if "gpu" not in kind.lower():
                    continue
                n = int(spec.get("Value", 0)) if key == "DiscreteResourceSpec" else 1
                counts[kind] = counts.get(kind, 0) + n
        for kind, n in counts.items():
            best[kind] = max(best.get(kind, 0), n)
    return best


def choose_gpu_kind(nodes: Iterable[dict[str, Any]], count: int) -> str:
    """The generic resource kind to ask ``count`` GPUs of; UnsupportedOption
    (naming gpu_limit) when no node could ever give that many."""
    kinds = gpu_kinds(nodes)
    fitting = sorted(kind for kind, n in kinds.items() if n >= count)
    if not fitting:
        have = ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())) or "none"
        raise UnsupportedOption(
            f"gpu_limit={count} cannot be met: no swarm node advertises that many GPUs "
            f"as generic resources (most on one node: {have})",
            fields={"gpu_limit": "no swarm node has that many GPUs"},
        )
    return fitting[0]


def mounts(spec: JobSpec, config: SwarmConfig, storebase: str | None) -> list[Mount]:
    """The job's folders (over NFS with STORAGE_TYPE=nfs, else bind mounts of
    ``storebase``, the folder on the engine's host) and its tmpfs mounts."""
    m = spec.mounts
    if config.engine.storage_type == "nfs":
        server, root = config.nfs_server, config.engine.storebase
        assert server is not None and root is not None
        base = str(root).rstrip("/")
        incoming = f"{base}/{m.input_dir}".rstrip("/")
        found = [
            nfs_mount(server, incoming, INCOMING, read_only=True),
            nfs_mount(server, f"{base}/{m.output_dir}", OUTGOING, read_only=False),
        ]
    else:
        # host folders, or the local volume's folder on this node (as the docker backend)
        assert storebase is not None
        incoming, outgoing = job_folders(m, storebase)
        found = [
            Mount(INCOMING, escape_template(incoming), type="bind", read_only=True),
            Mount(OUTGOING, escape_template(outgoing), type="bind", read_only=False),
        ]
    jobs = config.jobs
    if jobs.shm_size is not None:
        found.append(Mount("/dev/shm", None, type="tmpfs", tmpfs_size=jobs.shm_size * MIB))
    if jobs.read_only_rootfs:
        found.append(Mount("/tmp", None, type="tmpfs", tmpfs_mode=0o1777))
    return found


def resources(spec: JobSpec, config: SwarmConfig, gpu_kind: str | None) -> Resources | None:
    """The job's limits and reservations, and its GPUs as ``gpu_kind`` generic
    resources (see :func:`choose_gpu_kind`)."""
    r = spec.resources
    generic = {gpu_kind: r.gpu_limit} if gpu_kind is not None and r.gpu_limit > 0 else None
    if config.jobs.ignore_limits:
        return Resources(generic_resources=generic) if generic else None
    # reservations as large as the limits: the scheduler places a job only
    # on a node that has what it may use
    return Resources(
        cpu_limit=r.cpu_limit * 1_000_000,
        mem_limit=r.memory_limit * MIB,
        cpu_reservation=r.cpu_limit * 1_000_000,
        mem_reservation=r.memory_limit * MIB,
        generic_resources=generic,
    )


def task_template(
    spec: JobSpec, config: SwarmConfig, storebase: str | None, gpu_kind: str | None
) -> TaskTemplate:
    """The service's task template for ``spec``."""
    groups = [str(spec.gid)] if spec.uid is None and spec.gid is not None else None
    env = [escape_template(e) for e in spec.env]
    env += [
        f"PMAN_WORKER_INDEX={WORKER_INDEX_TEMPLATE}",
        f"PMAN_NUMBER_OF_WORKERS={spec.resources.number_of_workers}",
    ]
    container = ContainerSpec(
        spec.image,
        command=spec.command[:1],
        args=spec.command[1:],
        env=env,
        user=user_of(spec),
        groups=groups,
        labels=spec.labels,
        mounts=mounts(spec, config, storebase),
        # every capability dropped but PMAN_CAP_ADD's (API 1.41). Docker 20.10's
        # service API has no no-new-privileges (Privileges.NoNewPrivileges
        # came with API 1.46): with an empty bounding set a setuid file gains
        # a job no capability, only another uid.
        cap_drop=["ALL"],
        cap_add=list(config.jobs.cap_add) or None,
        read_only=config.jobs.read_only_rootfs or None,
    )
    return TaskTemplate(
        container,
        resources=resources(spec, config, gpu_kind),
        restart_policy=RestartPolicy(condition="none"),
    )


def service_options(spec: JobSpec) -> dict[str, Any]:
    """The SDK's ``create_service`` arguments but the task template."""
    return {
        "name": spec.name,
        "labels": spec.labels,
        "mode": ServiceMode("replicated", replicas=spec.resources.number_of_workers),
    }
