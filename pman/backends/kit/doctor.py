"""What ``pman doctor`` asks of each engine package, and the folder check they share.

Each engine package has a ``doctor`` module with ``checks(context)``: the
:class:`Check` list of one resource that runs that engine (pman.doctor runs
them, each bounded in time, and prints their :class:`Finding` s). A check
never submits a job, except SLURM's ``--submit-test``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pman.settings import Resource
    from pman.settings.core import CoreSettings


class Status(StrEnum):
    OK = "OK"
    PROBLEM = "PROBLEM"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class Finding:
    """One answer of the doctor: what was checked, how it went, and the fix of a problem."""

    check: str
    status: Status
    detail: str
    fix: str = ""
    #: the resource it is about; "" for what is global (the registry, the clock)
    resource: str = ""

    def of(self, resource: str) -> Finding:
        return Finding(self.check, self.status, self.detail, self.fix, resource)

    def as_json(self) -> dict[str, str]:
        """The stable keys of ``pman doctor --json``."""
        return {
            "resource": self.resource,
            "check": self.check,
            "result": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Status.OK, detail)


def problem(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, Status.PROBLEM, detail, fix)


def skipped(check: str, detail: str) -> Finding:
    return Finding(check, Status.SKIPPED, detail)


@dataclass(frozen=True)
class Check:
    """One step of the doctor: ``run`` gives its findings. Steps of a resource
    run in order; one whose ``needs`` (the name of an earlier step) found a
    problem is skipped (the engine does not answer: its permissions cannot be
    asked)."""

    name: str
    run: Callable[[], Iterable[Finding]]
    needs: str | None = None
    #: seconds the step may take; None: the doctor's --timeout
    timeout: float | None = None
    #: the fix when it does not finish in time
    hang_fix: str = "check that the engine is running and reachable from this machine"


@dataclass(frozen=True)
class DoctorContext:
    """What an engine's checks know: the resource, pman's core settings, and how to check."""

    resource: Resource
    core: CoreSettings
    #: PMAN_INSTANCE (names pman on its jobs)
    instance: str
    #: seconds each engine call may take
    timeout: float
    #: run the engines' test jobs (SLURM: a tiny batch job)
    submit_test: bool = False
    #: the variable that sets a resource's setting: ``HPC_STOREBASE`` when set, else ``STOREBASE``
    name_of: Callable[[str], str] = str


def who() -> str:
    """This process's user, as a fix names it."""
    try:
        import pwd

        name = pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        name = "?"
    return f"{name} (uid {os.geteuid()})"


def writable_folder(
    check: str, path: Path | None, variable: str, unset: str = "", made_by_pman: bool = False
) -> Finding:
    """Whether ``path`` is a folder this process can create files in: a real
    write (a probe file made and removed), as permission bits say too little
    (root, read-only mounts, ACLs). A folder pman makes itself (``made_by_pman``)
    may be missing if the nearest folder above it that exists is writable."""
    if path is not None and made_by_pman and not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        found = writable_folder(check, parent, variable)
        if found.status is Status.OK:
            return ok(
                check, f"{variable}={path} does not exist yet: pman makes it ({parent} is writable)"
            )
        return Finding(
            check,
            found.status,
            f"{variable}={path} does not exist yet and {parent} above it is not writable",
            found.fix,
        )
    if path is None:
        if unset:
            return skipped(check, f"{variable} is not set: {unset}")
        return problem(check, f"{variable} is not set", f"set {variable} to a folder")
    fix_access = (
        f"make {path} writable by the user pman runs as, {who()} (chown/chmod, or mount it "
        f"read-write), or set {variable} to a folder it can write"
    )
    if not path.exists():
        return problem(
            check,
            f"{variable}={path} does not exist",
            f"create it (mkdir -p {path}) writable by {who()}, or set {variable} to an existing "
            "folder",
        )
    if not path.is_dir():
        return problem(check, f"{variable}={path} is not a folder", f"set {variable} to a folder")
    probe = path / f".pman-doctor-{uuid.uuid4().hex[:12]}"
    try:
        probe.write_text("pman doctor\n")
    except OSError as e:
        return problem(check, f"{variable}={path} is not writable: {e.strerror or e}", fix_access)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return ok(check, f"{variable}={path} is writable")


def folder_checks(
    folders: Iterable[tuple[str, Path | None, str]], made_by_pman: Iterable[str] = ()
) -> list[Check]:
    """A check per (variable, folder, what an unset one means) that pman must
    write in; those of ``made_by_pman`` (variables) pman makes when missing."""
    makes = set(made_by_pman)
    return [
        Check(
            f"folder {variable}",
            lambda v=variable, p=path, u=unset: [
                writable_folder(f"folder {v}", p, v, u, made_by_pman=v in makes)
            ],
            hang_fix=f"the filesystem of {variable} does not answer: check its mount (NFS...)",
        )
        for variable, path, unset in folders
    ]
