"""The slurm engine's settings: where job folders live, what runs the image, sbatch options."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Self

from pman.settings.declare import EngineSettings, Env, Environ, Problems

if TYPE_CHECKING:
    from pman.settings.jobs import JobSettings
    from pman.settings.storage import StorageSettings

SLURM_RUNTIMES = ("apptainer", "singularity", "docker", "podman", "none")
#: the runtimes that run a job as the user that submits it (pman's)
RUNTIMES_AS_SUBMITTER = ("apptainer", "singularity", "none")
#: sbatch options pman sets itself for every job: SLURM_EXTRA_OPTIONS must not change them
SLURM_RESERVED_OPTIONS = frozenset(
    {
        "-J", "--job-name", "-o", "--output", "-e", "--error", "-a", "--array",
        "-D", "--chdir", "-i", "--input", "-W", "--wait", "--comment", "--export",
        "--open-mode", "--parsable", "--wrap", "--requeue", "--no-requeue",
        # per-job resources come from the request and TIMELIMIT_MINUTES
        "-t", "--time", "-c", "--cpus-per-task", "--mem", "--mem-per-cpu", "--gres",
        "--gpus", "-G",
    }
)  # fmt: skip
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,@+-]+")
_NAME_FORM = "a SLURM name (letters, digits, `_.,@+-`)"


def parse_slurm_extra_options(text: str) -> tuple[str, ...]:
    """SLURM_EXTRA_OPTIONS: sbatch options split as a shell would (``--constraint=a
    --reservation=r``); options pman sets itself for every job are refused."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot split {text!r} like a shell: {e}") from e
    if words and not words[0].startswith("-"):
        raise ValueError(f"{words[0]!r} is not an sbatch option (options start with '-')")
    for word in words:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
        elif word.startswith("-"):
            option = word[:2]  # a short option, perhaps glued to its value: -Jname
        else:
            continue  # the value of the option before
        if option in SLURM_RESERVED_OPTIONS:
            raise ValueError(f"{option} is set by pman for every job and cannot be given here")
    return tuple(words)


def slurm_name(text: str) -> str:
    if not _SLURM_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a SLURM name (letters, digits and _ . , @ + - only)")
    return text


class SlurmSettings(EngineSettings):
    """A SLURM cluster, through its own commands (see [SLURM](../README.md#slurm))."""

    title = "slurm"

    job_dir: Annotated[
        Path | None,
        Env(
            "SLURM_JOB_DIR",
            "one folder per job (batch script, log, exit status); pman and **every compute "
            "node must see it at this path** (a shared filesystem on a real cluster)",
            default_doc="`$PMAN_DATA_DIR/slurm/jobs`",
        ),
    ] = None
    container_runtime: Annotated[
        str,
        Env(
            "SLURM_CONTAINER_RUNTIME",
            "what runs the image on the node: `apptainer`, `singularity`, `docker`, `podman`, "
            "or `none` (the command itself, see [SLURM](../README.md#slurm))",
            choices=SLURM_RUNTIMES,
        ),
    ] = "apptainer"
    partition: Annotated[
        str | None,
        Env(
            "SLURM_PARTITION",
            "`sbatch --partition`",
            parse=slurm_name,
            form=_NAME_FORM,
            default_doc="the cluster's default",
        ),
    ] = None
    account: Annotated[
        str | None, Env("SLURM_ACCOUNT", "`sbatch --account`", parse=slurm_name, form=_NAME_FORM)
    ] = None
    qos: Annotated[
        str | None, Env("SLURM_QOS", "`sbatch --qos`", parse=slurm_name, form=_NAME_FORM)
    ] = None
    extra_options: Annotated[
        tuple[str, ...],
        Env(
            "SLURM_EXTRA_OPTIONS",
            "more sbatch options for every job, split like a shell (`--constraint=avx2 "
            "--reservation=chris`); the options pman sets itself (name, output, array, "
            "comment, chdir, export, time, CPUs, memory, GPUs, requeue...) are refused at "
            "start-up",
            parse=parse_slurm_extra_options,
            form="sbatch options",
        ),
    ] = ()
    bin_dir: Annotated[
        Path | None,
        Env(
            "SLURM_BIN_DIR",
            "the folder of `sbatch`, `squeue`, `scancel`, `scontrol`, `sinfo` (an absolute path)",
            default_doc="`PATH`",
        ),
    ] = None
    conf: Annotated[
        str | None,
        Env(
            "SLURM_CONF",
            "the `slurm.conf` SLURM's commands read (passed to them; other `SLURM_*`, "
            "`SBATCH_*`, `SQUEUE_*` variables of pman's environment are not)",
            default_doc="SLURM's default",
        ),
    ] = None

    def check(
        self, storage: StorageSettings, jobs: JobSettings, environ: Environ, problems: Problems
    ) -> None:
        name = environ.name_of
        if storage.storage_type not in ("host", "nfs"):
            problems.add(
                name("STORAGE_TYPE"),
                "the slurm backend needs STOREBASE as a folder the compute nodes see at the "
                "same path: STORAGE_TYPE host or nfs",
            )
        runtime = self.container_runtime
        user = jobs.container_user
        if runtime in RUNTIMES_AS_SUBMITTER and user is not None and (user.uid or user.gid):
            problems.add(
                name("CONTAINER_USER"),
                f"{name('SLURM_CONTAINER_RUNTIME')}={runtime} runs jobs as the user that "
                "submits them (pman's): CONTAINER_USER needs docker or podman",
            )
        if jobs.shm_size is not None and runtime not in ("docker", "podman"):
            problems.add(
                name("SHM_SIZE"), f"not supported with {name('SLURM_CONTAINER_RUNTIME')}={runtime}"
            )
        if self.bin_dir is not None and not self.bin_dir.is_absolute():
            problems.add(name("SLURM_BIN_DIR"), "must be an absolute path")

    def with_defaults(self, data_dir: Path) -> Self:
        job_dir = Path(os.path.abspath(self.job_dir or data_dir / "slurm" / "jobs"))
        return self.model_copy(update={"job_dir": job_dir})
