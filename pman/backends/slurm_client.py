"""SLURM's command-line tools as a small client: every command pman runs
against a SLURM cluster goes through :meth:`SlurmClient.run`, which raises
:class:`SlurmCommandError` with the command, its exit code, stdout and stderr.

Only the backend (pman.backends.slurm) turns those into pman's errors.
Parsing of the tools' output lives here too, as plain functions, so that it is
tested without a cluster.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
#: variables that change what SLURM's tools do (SBATCH_PARTITION, SQUEUE_FORMAT,
#: a SLURM_JOB_ID when pman itself runs in a job...): never passed on
_TOOL_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SQUEUE_", "SCANCEL_", "SINFO_", "SCONTROL_")


class SlurmCommandError(Exception):
    """A SLURM command failed: exit code ``returncode`` (None when it could not
    be run at all or did not finish within the timeout)."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        timed_out: bool = False,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        super().__init__(str(self))

    def __str__(self) -> str:
        how = "timed out" if self.timed_out else f"exited with code {self.returncode}"
        if self.returncode is None and not self.timed_out:
            how = "could not be run"
        text = (self.stderr or self.stdout).strip()
        return f"`{' '.join(self.argv)}` {how}" + (f": {text}" if text else "")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


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


@dataclass
class SlurmClient:
    """Runs SLURM's tools (``bin_dir`` or PATH) with a timeout, counting calls."""

    bin_dir: Path | None = None
    timeout: float = 30.0
    #: SLURM_CONF for the tools, None for SLURM's default
    conf: str | None = None
    #: commands run so far, by tool (the benchmark reads it)
    calls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith(_TOOL_ENV_PREFIXES)
        }
        if self.conf:
            env["SLURM_CONF"] = self.conf
        return env

    def run(self, argv: Sequence[str]) -> CommandResult:
        """THE way pman runs a SLURM command; SlurmCommandError unless it exits 0."""
        tool = argv[0]
        full = [str(self.bin_dir / tool) if self.bin_dir else tool, *argv[1:]]
        with self._lock:
            self.calls[tool] = self.calls.get(tool, 0) + 1
        try:
            done = subprocess.run(
                full,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=self.timeout,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise SlurmCommandError(
                tuple(full), None, _text(e.stdout), _text(e.stderr), timed_out=True
            ) from e
        except OSError as e:
            raise SlurmCommandError(tuple(full), None, "", str(e)) from e
        if done.returncode != 0:
            raise SlurmCommandError(tuple(full), done.returncode, done.stdout, done.stderr)
        return CommandResult(tuple(full), done.returncode, done.stdout, done.stderr)

    # ---------------------------------------------------------------- tools
    def sbatch(self, options: Sequence[str], script: Path) -> str:
        """Submit ``script``; the new job's id (of the array job for an array)."""
        out = self.run(["sbatch", "--parsable", *options, str(script)]).stdout
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
            out = self.run(argv).stdout
        except SlurmCommandError as e:
            # a job SLURM has forgotten (older than MinJobAge) is not an error here
            if job_id is not None and "invalid job id" in e.stderr.lower():
                return []
            raise
        return parse_squeue(out)

    def scancel(self, job_id: str) -> None:
        self.run(["scancel", job_id])

    def ping(self) -> str:
        return self.run(["scontrol", "ping"]).stdout

    def node_limits(self, partition: str | None) -> list[tuple[int, int, str]]:
        """(CPUs, memory MiB, generic resources) of each node of ``partition``
        (the default one when None)."""
        argv = ["sinfo", "--noheader", "--Node", "--format=%c|%m|%G"]
        if partition:
            argv.append(f"--partition={partition}")
        return parse_sinfo(self.run(argv).stdout)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


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
