"""What the local backend reads of pman's settings, read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pman.backends.local.sandbox import overlap
from pman.backends.local.settings import LocalSettings

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings


@dataclass(frozen=True)
class LocalConfig:
    """The local backend's settings."""

    #: PMAN_DATA_DIR: pman's own state, which no job may see
    data_dir: Path
    #: STOREBASE: every job's folders, of which a job sees only its own two
    storebase: Path | None
    #: PMAN_LOCAL_USER: whom jobs run as (``USER[:GROUP]``; None: the default)
    user: str | None
    #: PMAN_LOCAL_READ_ONLY_PATHS: more host folders every job sees read-only
    read_only_paths: tuple[Path, ...]
    #: IGNORE_LIMITS: cpu_limit and memory_limit are not enforced
    ignore_limits: bool

    @property
    def jobs_dir(self) -> Path:
        """Where the job folders are."""
        return self.data_dir / "local" / "jobs"

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalConfig:
        return cls.from_resource(settings.resource, settings.core)

    @classmethod
    def from_resource(cls, resource: Resource, core: CoreSettings) -> LocalConfig:
        """The configuration of a resource that runs ``local`` (``core``: pman's
        data folder, which no job may see)."""
        local = resource.engine_as(LocalSettings)
        return cls(
            data_dir=core.data_dir,
            storebase=resource.storage.storebase,
            user=local.user,
            read_only_paths=local.read_only_paths,
            ignore_limits=resource.jobs.ignore_limits,
        )

    def read_only_problems(self) -> list[str]:
        """Why folders of PMAN_LOCAL_READ_ONLY_PATHS cannot be shown to jobs."""
        forbidden = private_paths(self.storebase, self.data_dir)
        unusable = []
        for path in self.read_only_paths:
            real = os.path.realpath(path)
            clash = next((what for p, what in forbidden if overlap(real, p)), None)
            if not path.exists():
                unusable.append(f"{path} does not exist")
            elif clash:
                unusable.append(f"{path} overlaps {clash} (jobs would see data not theirs)")
        return unusable


def private_paths(storebase: Path | None, data_dir: Path | None) -> list[tuple[str, str]]:
    """The folders no job may see beyond its own two (real paths, with their names)."""
    found = []
    for path, what in ((storebase, "STOREBASE"), (data_dir, "PMAN_DATA_DIR")):
        if path is not None:
            found.append((os.path.realpath(path), what))
    return found
