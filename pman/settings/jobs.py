"""How a resource runs each job: user, labels, limits it ignores, how many at once."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Annotated

from pman.limits import parse_capabilities
from pman.settings.declare import Env, Section


@dataclass(frozen=True)
class IdRange:
    """A UID or GID given as a number or an inclusive range ``lo-hi``."""

    lo: int
    hi: int

    def pick(self) -> int:
        """A value from the range: a range spreads jobs over several ids, as upstream."""
        return self.lo if self.lo == self.hi else random.randint(self.lo, self.hi)


@dataclass(frozen=True)
class ContainerUser:
    """CONTAINER_USER as ``UID:GID``, either side may be a range or empty."""

    uid: IdRange | None = None
    gid: IdRange | None = None

    @classmethod
    def parse(cls, value: str) -> ContainerUser:
        if not value:
            return cls()
        parts = value.split(":")
        if len(parts) != 2:
            raise ValueError(f"{value!r} is not of the form UID:GID (each may be a range lo-hi)")
        return cls(*(_parse_id_range(p) for p in parts))


def _parse_id_range(text: str) -> IdRange | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is neither a number nor a range lo-hi")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise ValueError(f"range {text!r} ends before it starts")
    return IdRange(lo, hi)


_MEMSIZE_UNITS = {
    "": 1,
    "m": 1,
    "mi": 1,
    "mb": 1,
    "mib": 1,
    "g": 1024,
    "gi": 1024,
    "gb": 1024,
    "gib": 1024,
}


def parse_mebibytes(text: str) -> int:
    """A size in MiB: a plain number means MiB; ``m``/``Mi``/``g``/``Gi`` suffixes allowed."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _MEMSIZE_UNITS:
        raise ValueError(f"{text!r} is not a size in MiB (e.g. 512, 512Mi, 2Gi)")
    return int(m.group(1)) * _MEMSIZE_UNITS[m.group(2).lower()]


def parse_labels(text: str) -> dict[str, str]:
    """``key=value`` pairs separated by commas (JOB_LABELS, NODE_SELECTOR)."""
    labels: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not of the form key=value")
        labels[key.strip()] = value.strip()
    return labels


class JobSettings(Section):
    """How this resource runs each job, on whichever engine."""

    title = "jobs"

    logs_tail: Annotated[
        int, Env("JOB_LOGS_TAIL", "log lines returned with a job's status", ge=0)
    ] = 1000
    labels: Annotated[
        dict[str, str],
        Env(
            "JOB_LABELS",
            "labels put on every job container",
            parse=parse_labels,
            form="`key=value,key=value`",
        ),
    ] = {}
    ignore_limits: Annotated[
        bool, Env("IGNORE_LIMITS", "`yes`: set no CPU/memory limits on jobs")
    ] = False
    container_user: Annotated[
        ContainerUser,
        Env(
            "CONTAINER_USER",
            "the user a job runs as; either side may be a range `lo-hi` (a random id from it "
            "per job)",
            parse=ContainerUser.parse,
            form="`UID:GID`",
            default_doc="the image's user",
        ),
    ] = ContainerUser()
    enable_home_workaround: Annotated[
        bool,
        Env("ENABLE_HOME_WORKAROUND", "`yes`: add `HOME=/tmp` to every job's environment"),
    ] = False
    shm_size: Annotated[
        int | None,
        Env(
            "SHM_SIZE",
            "`/dev/shm` size in MiB (`512`, `512Mi`, `2Gi`)",
            parse=parse_mebibytes,
            form="size in MiB",
            default_doc="the engine's default",
        ),
    ] = None
    remove_jobs: Annotated[
        bool,
        Env("REMOVE_JOBS", "`no`: DELETE answers 204 but keeps the job (debugging)"),
    ] = True
    timelimit_minutes: Annotated[
        int,
        Env(
            "TIMELIMIT_MINUTES",
            "a job's wall-clock limit in minutes, after which it is killed and "
            "`finishedWithError`. kubernetes: `activeDeadlineSeconds`; slurm: `sbatch --time` "
            '("time limit reached"); cromwell: the task\'s `runtime_minutes` runtime '
            "attribute (SLURM's `--time` in the site's Cromwell configuration)",
            ge=1,
        ),
    ] = 30
    max_running: Annotated[
        int,
        Env(
            "PMAN_MAX_RUNNING",
            "the most unfinished jobs pman has on the engine at once; more wait in pman's own "
            "queue as `notstarted` and start in submission order; `0`: no limit",
            ge=0,
        ),
    ] = 0
    cap_add: Annotated[
        tuple[str, ...],
        Env(
            "PMAN_CAP_ADD",
            "docker, podman, swarm: comma-separated Linux capabilities given back to jobs "
            "(`NET_BIND_SERVICE` or `CAP_NET_BIND_SERVICE`; checked against capabilities(7) at "
            "start-up); every other one is dropped",
            parse=parse_capabilities,
            form="comma-separated capabilities",
        ),
    ] = ()
    read_only_rootfs: Annotated[
        bool,
        Env(
            "PMAN_READ_ONLY_ROOTFS",
            "docker, podman, swarm: `yes` runs jobs on a read-only root filesystem with a "
            "writable tmpfs at `/tmp` (its contents count in the job's memory)",
        ),
    ] = False
    overflow: Annotated[
        bool,
        Env(
            "PMAN_OVERFLOW",
            "`yes`: when this resource is at its `PMAN_MAX_RUNNING`, a job that named no "
            "resource (and is not pinned by URL) goes to the next resource in "
            "`PMAN_RESOURCES` order that can run it and has room, instead of waiting here",
        ),
    ] = False
    description: Annotated[
        str,
        Env(
            "PMAN_RESOURCE_DESCRIPTION",
            "a few words about this resource for people (GET /api/v1/resources/, `pman resources`)",
        ),
    ] = ""
