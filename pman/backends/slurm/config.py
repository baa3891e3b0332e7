"""What the slurm backend reads from pman's settings, in one place.

:func:`from_resource` (and :func:`from_settings`, which hands it the
resource) is the only reader of pman's settings in this package: the adapter,
the script builder and the command runner see only a :class:`SlurmConfig`.
The slurm engine's own variables (names, defaults, cross-checks,
documentation) are declared in :mod:`.settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pman.backends.slurm.settings import SlurmSettings

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings

#: runtimes that run the job's container as a child of their own engine
#: (not of the job): the script removes it when SLURM signals the job
RUNTIMES_WITH_ENGINE = ("docker", "podman")


@dataclass(frozen=True)
class SlurmConfig:
    #: SLURM_JOB_DIR: the folder of every job's folder, shared with the nodes
    job_dir: Path
    #: SLURM_CONTAINER_RUNTIME: apptainer, singularity, docker, podman or none
    runtime: str = "apptainer"
    #: STOREBASE as the nodes see it (the same path: STORAGE_TYPE host or nfs)
    storebase: Path | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    #: SLURM_EXTRA_OPTIONS, split as a shell would
    extra_options: tuple[str, ...] = ()
    #: SLURM_BIN_DIR: the folder of SLURM's commands, None for PATH
    bin_dir: Path | None = None
    #: SLURM_CONF for SLURM's commands, None for SLURM's own default
    conf: str | None = None
    #: PMAN_ENGINE_TIMEOUT: seconds a SLURM command may take
    engine_timeout: float = 30.0
    #: TIMELIMIT_MINUTES: every job's --time
    timelimit_minutes: int = 30
    #: IGNORE_LIMITS: no --mem / --cpus-per-task (nor container limits)
    ignore_limits: bool = False
    #: SHM_SIZE in MiB (docker and podman only)
    shm_size: int | None = None
    #: JOB_LABELS, put on docker and podman containers
    job_labels: Mapping[str, str] = field(default_factory=dict)
    #: PMAN_INSTANCE, in every job's --comment
    instance: str = ""

    def describe(self) -> str:
        """The cluster in a few words, for messages."""
        where = f" (SLURM_CONF={self.conf})" if self.conf else ""
        return f"SLURM cluster{where}"


def from_settings(settings: Settings) -> SlurmConfig:
    """The slurm backend's configuration: the one place it reads pman's settings."""
    return from_resource(settings.resource, settings.core, settings.registry.instance)


def from_resource(resource: Resource, core: CoreSettings, instance: str) -> SlurmConfig:
    """The configuration of a resource that runs ``slurm``: its sections, pman's
    engine timeout (``core``) and the name pman gives itself on its jobs."""
    slurm = resource.engine_as(SlurmSettings)
    jobs = resource.jobs
    assert slurm.job_dir is not None  # load_settings always sets it
    return SlurmConfig(
        job_dir=slurm.job_dir,
        runtime=slurm.container_runtime,
        storebase=resource.storage.storebase,
        partition=slurm.partition,
        account=slurm.account,
        qos=slurm.qos,
        extra_options=tuple(slurm.extra_options),
        bin_dir=slurm.bin_dir,
        conf=slurm.conf,
        engine_timeout=core.engine_timeout,
        timelimit_minutes=jobs.timelimit_minutes,
        ignore_limits=jobs.ignore_limits,
        shm_size=jobs.shm_size,
        job_labels=dict(jobs.labels),
        instance=instance,
    )
