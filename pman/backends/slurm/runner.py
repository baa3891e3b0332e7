"""The ONE way pman runs a SLURM command.

A runner runs a command of SLURM's (``["squeue", "--me", ...]``) and returns
its output, or raises :class:`SlurmCommandError` with the command, its exit
code, stdout and stderr; nothing else in the package starts a process.
:class:`LocalRunner` runs the tools on this host; a runner that reaches a
login node another way (over SSH, say) only has to do the same.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

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


class Runner(Protocol):
    """Runs SLURM's commands; :class:`SlurmCommandError` unless one exits 0."""

    #: commands run so far, by tool (the benchmark reads it)
    calls: dict[str, int]

    def run(self, argv: Sequence[str]) -> CommandResult: ...


@dataclass
class LocalRunner:
    """Runs SLURM's tools on this host (``bin_dir`` or PATH) with a timeout,
    counting calls."""

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


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")
