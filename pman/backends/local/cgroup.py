"""Per-job cgroups of the local backend: the memory and CPU limits a job asked for.

Each job gets a cgroup of its own, ``pman/<jid>-<random>`` under each
controller's hierarchy: cgroup v1 (``/sys/fs/cgroup/memory/pman/...`` with
``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``,
``/sys/fs/cgroup/cpu/pman/...`` with ``cpu.cfs_quota_us``) or cgroup v2 (one
``/sys/fs/cgroup/pman/...`` with ``memory.max``, ``memory.swap.max`` and
``cpu.max``). :func:`detect` runs at start-up, as pman's user, and says which
limits can be enforced and why not; the job's supervisor (root, or pman's
user) creates, joins, reads and removes the job's cgroup with the functions
below. A plan is a plain dict, so it is kept in the job's ``spec.json``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: the folder under each hierarchy that holds every job's cgroup
PARENT = "pman"
CFS_PERIOD_US = 100_000
#: the kernel refuses a smaller quota (1 ms per period)
MIN_CFS_QUOTA_US = 1_000
CONTROLLERS = ("memory", "cpu")
#: the files that must exist for a controller to limit anything
_V1_LIMIT_FILE = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}
_V2_LIMIT_FILE = {"memory": "memory.max", "cpu": "cpu.max"}


@dataclass(frozen=True)
class CgroupSupport:
    """What :func:`detect` found: per controller, the folder job cgroups go in,
    or why that controller cannot be used."""

    version: int = 0
    parents: dict[str, Path] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def describe(self, controller: str) -> str:
        """One phrase for the start-up log: how a limit is enforced, or why not."""
        limit = {"memory": "memory_limit", "cpu": "cpu_limit"}[controller]
        if controller in self.parents:
            files = _V1_LIMIT_FILE if self.version == 1 else _V2_LIMIT_FILE
            where = self.parents[controller] / "<job>" / files[controller]
            return f"{limit} enforced (cgroup v{self.version}: {where})"
        return f"{limit} NOT enforced ({self.problems.get(controller, 'no cgroup')})"


def _v1_mounts(mounts: str) -> dict[str, Path]:
    """Where each v1 controller's hierarchy is mounted, from /proc/self/mounts."""
    found: dict[str, Path] = {}
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup":
            continue
        options = parts[3].split(",")
        for controller in CONTROLLERS:
            if controller in options and controller not in found:
                found[controller] = Path(parts[1].replace("\\040", " "))
    return found


def detect(
    root: Path = CGROUP_ROOT, mounts_file: Path = Path("/proc/self/mounts")
) -> CgroupSupport:
    """Which limits pman can enforce here, preparing the ``pman`` folders it needs.

    cgroup v2 is used when ``root/cgroup.controllers`` exists (a unified
    hierarchy); otherwise the v1 hierarchies of the memory and cpu controllers
    are looked up in ``mounts_file``. Creating ``pman`` there is what proves
    that this process may make cgroups (root, or a delegated hierarchy).
    """
    if (root / "cgroup.controllers").is_file():
        return _detect_v2(root)
    try:
        mounts = _v1_mounts(mounts_file.read_text())
    except OSError as e:
        return CgroupSupport(problems=dict.fromkeys(CONTROLLERS, f"cannot read {mounts_file}: {e}"))
    parents: dict[str, Path] = {}
    problems: dict[str, str] = {}
    for controller in CONTROLLERS:
        mount = mounts.get(controller)
        if mount is None:
            problems[controller] = f"no cgroup v1 {controller} hierarchy and no cgroup v2"
            continue
        if not (mount / _V1_LIMIT_FILE[controller]).exists():
            problems[controller] = f"the kernel has no {_V1_LIMIT_FILE[controller]}"
            continue
        parent = mount / PARENT
        try:
            parent.mkdir(exist_ok=True)
        except OSError as e:
            problems[controller] = f"cannot create {parent} as uid {os.getuid()}: {e.strerror}"
            continue
        if not os.access(parent, os.W_OK):
            problems[controller] = f"{parent} is not writable by uid {os.getuid()}"
            continue
        parents[controller] = parent
    return CgroupSupport(1, parents, problems)


def _detect_v2(root: Path) -> CgroupSupport:
    parent = root / PARENT
    try:
        available = (root / "cgroup.controllers").read_text().split()
    except OSError as e:
        return CgroupSupport(2, problems=dict.fromkeys(CONTROLLERS, f"cannot read cgroups: {e}"))
    problems = {
        c: f"the cgroup v2 root offers no {c} controller" for c in CONTROLLERS if c not in available
    }
    try:
        parent.mkdir(exist_ok=True)
    except OSError as e:
        reason = f"cannot create {parent} as uid {os.getuid()}: {e.strerror}"
        return CgroupSupport(2, problems={c: problems.get(c, reason) for c in CONTROLLERS})
    parents: dict[str, Path] = {}
    for controller in (c for c in CONTROLLERS if c not in problems):
        # a cgroup's children get a controller only once its parent hands it
        # down; one at a time, as the kernel may refuse one (cpu, with
        # realtime tasks about) and not the other
        try:
            for folder in (root, parent):
                control = folder / "cgroup.subtree_control"
                if controller not in control.read_text().split():
                    control.write_text(f"+{controller}")
        except OSError as e:
            problems[controller] = (
                f"cannot enable {controller} for {parent} as uid {os.getuid()}: {e.strerror or e}"
            )
            continue
        parents[controller] = parent
    return CgroupSupport(2, parents, problems)


def plan(
    support: CgroupSupport, leaf: str, memory_mib: int, cpu_millicores: int
) -> dict[str, Any] | None:
    """The cgroup of one job: folders and limit values, None when nothing is enforced."""
    if not support.parents:
        return None
    dirs = {c: str(p / leaf) for c, p in support.parents.items()}
    return {
        "version": support.version,
        "dirs": dirs,
        "memory_bytes": memory_mib * 1024 * 1024 if "memory" in dirs else None,
        "memory_mib": memory_mib if "memory" in dirs else None,
        "cpu_quota_us": (
            max(MIN_CFS_QUOTA_US, cpu_millicores * CFS_PERIOD_US // 1000) if "cpu" in dirs else None
        ),
    }


def _folders(cg: dict[str, Any]) -> list[Path]:
    """The job's distinct cgroup folders (one on v2, one per controller on v1)."""
    return sorted({Path(d) for d in cg["dirs"].values()})


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def create(cg: dict[str, Any]) -> None:
    """Make the job's cgroup folders and set its limits; raises OSError."""
    for folder in _folders(cg):
        if folder.exists():
            # a leftover of a supervisor killed before it cleaned up: reuse
            # nothing of it (its counters would report a past OOM kill)
            _empty(folder, 2.0)
            folder.rmdir()
        folder.mkdir()
    dirs = {c: Path(d) for c, d in cg["dirs"].items()}
    memory, quota = cg["memory_bytes"], cg["cpu_quota_us"]
    if cg["version"] == 1:
        if memory is not None:
            _write(dirs["memory"] / "memory.limit_in_bytes", str(memory))
            # without it the job could go on in swap where there is swap
            swap = dirs["memory"] / "memory.memsw.limit_in_bytes"
            if swap.exists():
                _write(swap, str(memory))
        if quota is not None:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
    else:
        if memory is not None:
            _write(dirs["memory"] / "memory.max", str(memory))
            swap = dirs["memory"] / "memory.swap.max"
            if swap.exists():
                _write(swap, "0")
        if quota is not None:
            _write(dirs["cpu"] / "cpu.max", f"{quota} {CFS_PERIOD_US}")


def join(cg: dict[str, Any], pid: int) -> None:
    """Move process ``pid`` into the job's cgroup (its children follow)."""
    for folder in _folders(cg):
        _write(folder / "cgroup.procs", str(pid))


def oom_kills(cg: dict[str, Any]) -> int:
    """How many processes of the job the kernel killed for its memory limit."""
    memory = cg["dirs"].get("memory")
    if memory is None:
        return 0
    name = "memory.oom_control" if cg["version"] == 1 else "memory.events"
    try:
        text = (Path(memory) / name).read_text()
    except OSError:
        return 0
    m = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def _pids(folder: Path) -> list[int]:
    try:
        return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _empty(folder: Path, timeout: float) -> None:
    """Kill what is left in ``folder`` and wait until the kernel has let it go."""
    deadline = time.monotonic() + timeout
    while pids := _pids(folder):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def remove(cg: dict[str, Any], timeout: float = 5.0) -> list[str]:
    """Kill what is left of the job and remove its cgroup folders; the
    problems met (a folder still busy), as messages."""
    problems = []
    for folder in _folders(cg):
        if not folder.exists():
            continue
        _empty(folder, timeout)
        # a process just killed leaves its cgroup a moment after it is reaped
        deadline = time.monotonic() + timeout
        while True:
            try:
                folder.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    problems.append(f"cannot remove {folder}: {e.strerror}")
                    break
                time.sleep(0.02)
    return problems
