"""SLURM's commands pman uses, and their output parsed.

:class:`SlurmClient` knows which command answers what (``sbatch --parsable``,
``squeue --Format=...``, ``scancel``, ``scontrol ping``, ``sinfo``) and runs
each through its :class:`~pman.backends.slurm.runner.Runner`; the parsing
is plain functions, tested without a cluster. Only the adapter turns a
:class:`~pman.backends.slurm.runner.SlurmCommandError` into pman's errors
(:mod:`pman.backends.slurm.errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pman.backends.slurm.runner import LocalRunner, Runner, SlurmCommandError

#: squeue --Format fields pman reads, in order. ``exit_code`` is the raw wait
#: status of a finished job (exit code = value >> 8, signal = value & 0x7f);
#: https://slurm.schedmd.com/squeue.html#OPT_format
SQUEUE_FIELDS = (
    "JobID",
    "ArrayJobID",
    "ArrayTaskID",
    "State",
    "exit_code",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "Reason",
    "Name",
    "Comment",
)
#: ends every field: a field without a size is printed in full, followed by this
_SEP = "|"


@dataclass(frozen=True)
class QueueRow:
    """One line of squeue: a job, or one task of an array job."""

    job_id: str
    array_job_id: str
    array_task_id: int | None
    state: str
    #: raw wait status of a finished job, None while it runs
    exit_status: int | None
    submit_time: str
    start_time: str
    end_time: str
    reason: str
    name: str
    comment: str


class SlurmClient:
    """SLURM's commands, run by ``runner`` (SLURM's tools on this host by default)."""

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner: Runner = runner if runner is not None else LocalRunner()

    @property
    def calls(self) -> dict[str, int]:
        """Commands run so far, by tool (the benchmark reads it)."""
        return self.runner.calls

    def sbatch(self, options: Sequence[str], script: Path) -> str:
        """Submit ``script``; the new job's id (of the array job for an array)."""
        out = self.runner.run(["sbatch", "--parsable", *options, str(script)]).stdout
        return parse_sbatch(out)

    def squeue(self, *, all_states: bool, job_id: str | None = None) -> list[QueueRow]:
        """pman's user's jobs (one line per array task); ``all_states`` adds
        finished jobs SLURM still keeps (MinJobAge)."""
        argv = ["squeue", "--noheader", "--array", "--me", f"--Format={squeue_format()}"]
        if all_states:
            argv.append("--states=all")
        if job_id is not None:
            argv.append(f"--jobs={job_id}")
        try:
            out = self.runner.run(argv).stdout
        except SlurmCommandError as e:
            # a job SLURM has forgotten (older than MinJobAge) is not an error here
            if job_id is not None and "invalid job id" in e.stderr.lower():
                return []
            raise
        return parse_squeue(out)

    def scancel(self, job_id: str) -> None:
        self.runner.run(["scancel", job_id])

    def ping(self) -> str:
        return self.runner.run(["scontrol", "ping"]).stdout

    def node_limits(self, partition: str | None) -> list[tuple[int, int, str]]:
        """(CPUs, memory MiB, generic resources) of each node of ``partition``
        (the default one when None)."""
        argv = ["sinfo", "--noheader", "--Node", "--format=%c|%m|%G"]
        if partition:
            argv.append(f"--partition={partition}")
        return parse_sinfo(self.runner.run(argv).stdout)


def squeue_format() -> str:
    return ",".join(f"{name}:{_SEP}" for name in SQUEUE_FIELDS)


def parse_sbatch(out: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    job_id = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {out!r}")
    return job_id


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse_squeue(out: str) -> list[QueueRow]:
    """Rows of ``squeue --Format`` as :func:`squeue_format` asks; lines that do
    not split into the fields (another user's job name with a '|') are skipped."""
    rows = []
    n = len(SQUEUE_FIELDS)
    for line in out.splitlines():
        parts = line.rstrip("\n").split(_SEP)
        if len(parts) == n + 1 and parts[-1].strip() == "":
            parts = parts[:n]
        if len(parts) != n:
            continue
        v = [p.strip() for p in parts]
        rows.append(
            QueueRow(
                job_id=v[0],
                array_job_id=v[1] or v[0],
                array_task_id=_int_or_none(v[2]),
                state=v[3],
                exit_status=_int_or_none(v[4]),
                submit_time=v[5],
                start_time=v[6],
                end_time=v[7],
                reason=v[8],
                name=v[9],
                comment=v[10],
            )
        )
    return rows


def parse_sinfo(out: str) -> list[tuple[int, int, str]]:
    nodes = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        cpus = _int_or_none(parts[0].rstrip("+"))
        mem = _int_or_none(parts[1].rstrip("+"))
        if cpus is not None and mem is not None:
            nodes.append((cpus, mem, parts[2]))
    return nodes
