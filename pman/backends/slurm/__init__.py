"""Jobs as SLURM batch jobs, submitted with ``sbatch``.

Each pman job is one batch job named after its jid (an array job ``--array=1-N``
for N workers); the batch script runs the job's image with the container
runtime SLURM_CONTAINER_RUNTIME (apptainer/singularity, docker, podman, or
none: the command itself on the node), with STOREBASE/input_dir read-only at
/share/incoming and STOREBASE/output_dir read-write at /share/outgoing.

Every job has a folder ``SLURM_JOB_DIR/<jid>`` that pman and the nodes share:

- ``job.sh``: the batch script, ``meta.json``: what pman submitted (the SLURM
  job id, image, command, fingerprint, labels);
- ``log``: stdout and stderr of every worker (sbatch ``--output``, appended);
- ``exit.<i>``: the exit code of worker i's command, written by the script;
  ``oom.<i>``: docker/podman reported the container OOM-killed;
  ``error.<i>``: the runtime could not start the job (a system error).

The job's state comes from ``squeue``, which lists pman's user's jobs with
their raw exit status (one call for every job: the tracker's cycle) for as
long as slurmctld keeps finished jobs (MinJobAge); after that, from the
status files the script wrote. pman's jobs carry a ``--comment`` with pman's
marker, instance, request fingerprint and number of workers.

A container started by docker or podman is not a process of the job: the
script traps the signals SLURM sends on scancel and at the time limit and
removes the container itself, then exits.

The package, one concern per module:

- :mod:`.settings`: its variables (names, defaults, checks, documentation);
- :mod:`.config`: what the backend reads from pman's settings (``from_settings``);
- :mod:`.runner`: THE helper that runs a SLURM command (:class:`LocalRunner`;
  another runner, over SSH say, can take its place);
- :mod:`.client`: SLURM's commands pman uses and their output parsed;
- :mod:`.comment`: the ``--comment`` that marks pman's jobs;
- :mod:`.script` and ``batch.sh.tmpl``: the batch script and sbatch's options;
- :mod:`.state`: job states from squeue's rows and the script's status files;
- :mod:`.jobdir`: the job folders; :mod:`.errors`: SLURM's failures as pman's errors;
- :mod:`.adapter`: :class:`SlurmBackend`, wiring them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pman.backends.lazy import exports

if TYPE_CHECKING:
    from pman.backends.slurm.adapter import SlurmBackend
    from pman.backends.slurm.client import SlurmClient
    from pman.backends.slurm.config import SlurmConfig
    from pman.backends.slurm.runner import LocalRunner, SlurmCommandError

__all__ = ["LocalRunner", "SlurmBackend", "SlurmClient", "SlurmCommandError", "SlurmConfig"]

# imported when first asked for: pman's settings import this package (the
# engine's own section, .settings) without its adapter and client library
__getattr__ = exports(
    __name__,
    {
        "LocalRunner": "runner",
        "SlurmBackend": "adapter",
        "SlurmClient": "client",
        "SlurmCommandError": "runner",
        "SlurmConfig": "config",
    },
)
