"""Where a resource's jobs find their input and put their output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import field_validator

from pman.backends import engine_sections
from pman.settings.declare import Env, Environ, Problems, Section

STORAGE_TYPES = ("host", "nfs", "docker_local_volume", "kubernetes_pvc")


def engines_with_volume(storage_type: str) -> tuple[str, ...]:
    """The engines ``storage_type`` is a volume of (EngineSettings.volumes); none
    for a storage type that is no engine's own."""
    return tuple(name for name, s in engine_sections().items() if storage_type in s.volumes)


class StorageSettings(Section):
    """The folder (or volume) holding every job's input and output."""

    title = "storage"

    storage_type: Annotated[
        str,
        Env(
            "STORAGE_TYPE",
            "`host`: STOREBASE is a host folder; `docker_local_volume`: a Docker/Podman local "
            "volume (docker, podman, swarm); `nfs`: STOREBASE is a path on `NFS_SERVER` "
            "(swarm, kubernetes, slurm); `kubernetes_pvc`: the PersistentVolumeClaim "
            "`VOLUME_NAME`, jobs mount their folders as sub-paths (kubernetes)",
            choices=STORAGE_TYPES,
        ),
    ] = "host"
    storebase: Annotated[
        Path | None,
        Env(
            "STOREBASE",
            "folder holding every job's input and output",
            default_doc="— (required for `host` and `nfs`)",
        ),
    ] = None
    nfs_server: Annotated[
        str | None, Env("NFS_SERVER", "the NFS server for `STORAGE_TYPE=nfs`")
    ] = None
    volume_name: Annotated[
        str | None,
        Env(
            "VOLUME_NAME",
            "the volume for `docker_local_volume`; the claim for `kubernetes_pvc`",
        ),
    ] = None
    pfcon_selector: Annotated[
        str,
        Env(
            "PFCON_SELECTOR",
            "without `VOLUME_NAME`, the volume mounted at `/var/local/storeBase` in the "
            "container with this label",
        ),
    ] = "org.chrisproject.role=pfcon"

    @field_validator("storebase")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.abspath(value))

    def check(self, container_env: str | None, environ: Environ, problems: Problems) -> None:
        """What the storage type needs, and whether the engine has it."""
        storage = self.storage_type
        name = environ.name_of
        if storage in ("host", "nfs") and self.storebase is None:
            problems.add(name("STOREBASE"), f"required when {name('STORAGE_TYPE')}={storage}")
        if storage == "nfs" and not self.nfs_server:
            problems.add(name("NFS_SERVER"), f"required when {name('STORAGE_TYPE')}=nfs")
        if storage == "kubernetes_pvc" and not self.volume_name:
            problems.add(
                name("VOLUME_NAME"), f"required when {name('STORAGE_TYPE')}=kubernetes_pvc"
            )
        engines = engines_with_volume(storage) if storage is not None else ()
        if engines and container_env not in engines:
            needed = (
                f"={engines[0]}"
                if len(engines) == 1
                else f" {', '.join(engines[:-1])} or {engines[-1]}"
            )
            problems.add(name("STORAGE_TYPE"), f"{storage} needs {name('CONTAINER_ENV')}{needed}")
