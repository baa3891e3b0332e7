"""What the slurm backend reads from pman's settings, in one place.

:func:`from_settings` is the only reader of :class:`~pman.settings.Settings`
in this package: the adapter, the script builder and the command runner see
only a :class:`SlurmConfig`. The settings themselves (names, defaults,
cross-checks, documentation) are still declared in :mod:`pman.settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pman.settings import Settings

#: runtimes that run the job's container as a child of their own engine
#: (not of the job): the script removes it when SLURM signals the job
RUNTIMES_WITH_ENGINE = ("docker", "podman")
#: runtimes that run the job as the user who submits it (pman's)
RUNTIMES_AS_SUBMITTER = ("apptainer", "singularity", "none")


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
    assert settings.slurm_job_dir is not None  # load_settings always sets it
    return SlurmConfig(
        job_dir=settings.slurm_job_dir,
        runtime=settings.slurm_container_runtime,
        storebase=settings.storebase,
        partition=settings.slurm_partition,
        account=settings.slurm_account,
        qos=settings.slurm_qos,
        extra_options=tuple(settings.slurm_extra_options),
        bin_dir=settings.slurm_bin_dir,
        conf=settings.slurm_conf,
        engine_timeout=settings.engine_timeout,
        timelimit_minutes=settings.timelimit_minutes,
        ignore_limits=settings.ignore_limits,
        shm_size=settings.shm_size,
        job_labels=dict(settings.job_labels),
        instance=settings.instance,
    )
