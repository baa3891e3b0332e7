"""Jobs as host processes, no engine needed: pman's embedded default.

The job's command runs on the host with /share/incoming and /share/outgoing
rewritten to the real folders under STOREBASE. The image is recorded but not
used, and CPU and memory limits are not enforced (there is no container);
GPUs and several workers are refused. Each job is a folder under
``PMAN_DATA_DIR/local/jobs`` kept by a detached supervisor
(:mod:`pman.backends.local_runner`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pman.backends.base import Backend
from pman.backends.local_runner import write_json
from pman.errors import BackendError, BackendUnavailable, JobExists, JobNotFound, UnsupportedOption
from pman.models import INCOMING, OUTGOING, JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: How the files of a job folder translate to a state (pman's own runner:
#: pman/backends/local_runner.py). "vanished" means the supervisor is gone
#: without recording an outcome (host rebooted, killed with SIGKILL).
LOCAL_STATES: dict[str, JobState] = {
    "submitted": JobState.QUEUED,
    "running": JobState.RUNNING,
    "exited_0": JobState.SUCCEEDED,
    "exited_nonzero": JobState.FAILED,
    "signalled": JobState.FAILED,
    "not_started": JobState.SYSTEM_ERROR,
    "vanished": JobState.SYSTEM_ERROR,
    #: ended after a cancel (``cancelled.json``), however its process ended
    "cancelled": JobState.CANCELLED,
}

_SUBMIT_GRACE_S = 10.0


def tail_lines(path: Path, n: int, block: int = 65536) -> str:
    """The last ``n`` lines of a file, reading only as much of its end as needed."""
    if n <= 0:
        return ""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return ""
    with f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.splitlines(keepends=True)[-n:]
    return b"".join(lines).decode("utf-8", errors="replace")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise BackendError(f"local job record {path} is unreadable: {e}") from e


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _pid_runs(pid: int, jobdir: Path) -> bool:
    """True if ``pid`` is alive and is the supervisor of ``jobdir`` (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and str(jobdir).encode() in cmdline


class LocalBackend(Backend):
    name = "local"

    def __init__(self, jobs_dir: Path, storebase: Path | None) -> None:
        self.jobs_dir = jobs_dir
        self.storebase = storebase

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        log.warning(
            "local backend: jobs run as host processes of user %s; cpu_limit and "
            "memory_limit are recorded but not enforced",
            os.getuid(),
        )
        return cls(settings.data_dir / "local" / "jobs", settings.storebase)

    def describe(self) -> str:
        return f"local processes (job records in {self.jobs_dir})"

    def _dir(self, name: str) -> Path:
        if not self.name_pattern.fullmatch(name):  # never a path out of jobs_dir
            raise JobNotFound(f"no local job named {name!r}")
        return self.jobs_dir / name

    # ------------------------------------------------------------------ submit
    def submit(self, spec: JobSpec) -> JobInfo:
        if spec.resources.gpu_limit > 0:
            raise UnsupportedOption(
                "the local backend cannot give a job GPUs (gpu_limit must be 0)",
                fields={"gpu_limit": "must be 0 on the local backend"},
            )
        if spec.resources.number_of_workers != 1:
            raise UnsupportedOption(
                "the local backend runs one worker per job (number_of_workers must be 1)",
                fields={"number_of_workers": "must be 1 on the local backend"},
            )
        m = spec.mounts
        if m.input_host is None or m.output_host is None:
            raise UnsupportedOption("the local backend needs STORAGE_TYPE=host")
        program = spec.command[0]
        if shutil.which(program) is None:
            raise UnsupportedOption(
                f"entrypoint {program!r} is not an executable on this host",
                fields={"entrypoint": "not found on the host"},
            )
        host_command = [_to_host(a, str(m.input_host), str(m.output_host)) for a in spec.command]
        env = dict(e.split("=", 1) for e in spec.env)
        if spec.uid is not None or spec.gid is not None:
            raise UnsupportedOption(
                "CONTAINER_USER is not supported by the local backend: jobs run as pman's user"
            )

        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendUnavailable(f"cannot create {self.jobs_dir}: {e}") from e
        jobdir = self._dir(spec.name)
        try:
            # mkdir is atomic: two submits of one name cannot both win
            jobdir.mkdir()
        except FileExistsError:
            existing = self._info_or_none(spec.name)
            raise JobExists(f"job {spec.name!r} exists already", existing=existing) from None
        now = datetime.now(UTC)
        record = {
            "name": spec.name,
            "image": spec.image,
            "command": spec.command,
            "host_command": host_command,
            "env": env,
            "cwd": str(m.output_host),
            "fingerprint": spec.fingerprint,
            "labels": spec.labels,
            "created_at": now.isoformat(),
        }
        (jobdir / "spec.json").write_text(json.dumps(record))
        try:
            subprocess.run(
                [sys.executable, "-m", "pman.backends.local_runner", str(jobdir)],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=_SUBMIT_GRACE_S,
            )
        except (subprocess.SubprocessError, OSError) as e:
            self.delete(spec.name)  # stops a supervisor that did start, then removes
            raise BackendError(f"could not start the local job supervisor: {e}") from e
        return JobInfo(
            name=spec.name,
            state=JobState.QUEUED,
            image=spec.image,
            command=spec.command,
            message="submitted to a local supervisor",
            created_at=now,
            fingerprint=spec.fingerprint,
            native_id=str(jobdir),
        )

    # ------------------------------------------------------------------ state
    def _info_or_none(self, name: str) -> JobInfo | None:
        try:
            return self.get(name)
        except JobNotFound:
            return None

    def get(self, name: str) -> JobInfo:
        jobdir = self._dir(name)
        spec = _read_json(jobdir / "spec.json")
        if spec is None:
            raise JobNotFound(f"no local job named {name!r}")
        runner = _read_json(jobdir / "runner.json")
        alive = runner is not None and _pid_runs(runner["pid"], jobdir)
        # read after the liveness check: a supervisor writes its result before
        # it ends, so one found gone here has left its result to read
        started = _read_json(jobdir / "started.json")
        result = _read_json(jobdir / "result.json")
        created_at = _parse_time(spec["created_at"])
        exit_code = None
        reason = ""
        if result is not None:
            exit_code = result["exit_code"]
            if result.get("error"):
                phase, message = "not_started", result["error"]
                reason = "start_failed"
            elif "signal" in result:
                sig = signal.Signals(result["signal"]).name
                phase, message, reason = "signalled", f"killed by {sig}", "signalled"
            elif exit_code == 0:
                phase, message = "exited_0", "exited with code 0"
            else:
                phase, message = "exited_nonzero", f"exited with code {exit_code}"
                reason = "exit_code"
        elif alive:
            phase = "running" if started else "submitted"
            message = "running" if started else "starting"
        elif runner is None and created_at and time.time() - created_at.timestamp() < 60:
            phase, message = "submitted", "waiting for the supervisor"
        else:
            phase = "vanished"
            message = "the job's supervisor ended without recording an outcome"
            reason = "supervisor_lost"
        if phase not in ("running", "submitted") and (jobdir / "cancelled.json").exists():
            phase, message, reason = "cancelled", "cancelled", "cancelled"
        return JobInfo(
            name=name,
            state=LOCAL_STATES[phase],
            image=spec["image"],
            command=spec["command"],
            exit_code=exit_code,
            reason=reason,
            message=message,
            created_at=created_at,
            started_at=_parse_time(started["started_at"]) if started else None,
            finished_at=_parse_time(result["finished_at"]) if result else None,
            fingerprint=spec.get("fingerprint"),
            labels=spec.get("labels") or {},
        )

    def list(self) -> list[JobInfo]:
        if not self.jobs_dir.is_dir():
            return []
        infos = []
        for jobdir in self.jobs_dir.iterdir():
            try:
                infos.append(self.get(jobdir.name))
            except JobNotFound:
                continue  # being created or removed right now
        return infos

    def list_active(self) -> list[JobInfo]:
        # a job folder with a result is finished: skip it without reading it,
        # so a cycle's cost follows running jobs, not the whole history
        if not self.jobs_dir.is_dir():
            return []
        infos = []
        for jobdir in self.jobs_dir.iterdir():
            if (jobdir / "result.json").exists():
                continue
            try:
                info = self.get(jobdir.name)
            except JobNotFound:
                continue
            if not info.state.finished:
                infos.append(info)
        return infos

    def logs(self, name: str, tail: int) -> str:
        jobdir = self._dir(name)
        if not (jobdir / "spec.json").exists():
            raise JobNotFound(f"no local job named {name!r}")
        return tail_lines(jobdir / "output.log", tail)

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        jobdir = self._dir(name)
        if not (jobdir / "spec.json").exists():
            raise JobNotFound(f"no local job named {name!r}")
        return self._file_logs(name, jobdir / "output.log", tail, since, follow)

    # ------------------------------------------------------------------ cancel
    def cancel(self, name: str) -> None:
        """Stop the job's processes as DELETE does, but keep its folder (logs,
        outcome). ``cancelled.json`` tells a supervisor that has not started
        the command yet not to, and ``get`` that the job was cancelled."""
        jobdir = self._dir(name)
        if not (jobdir / "spec.json").exists():
            raise JobNotFound(f"no local job named {name!r}")
        if (jobdir / "result.json").exists():
            return
        write_json(jobdir / "cancelled.json", {"cancelled_at": datetime.now(UTC).isoformat()})
        runner = _read_json(jobdir / "runner.json")
        if runner is not None:
            self._kill_group(runner["pid"], runner["pgid"], jobdir)

    # ------------------------------------------------------------------ delete
    def delete(self, name: str) -> None:
        jobdir = self._dir(name)
        if not jobdir.exists():
            return
        runner = _read_json(jobdir / "runner.json")
        if runner is not None:
            self._kill_group(runner["pid"], runner["pgid"], jobdir)
        shutil.rmtree(jobdir, ignore_errors=True)

    @staticmethod
    def _kill_group(pid: int, pgid: int, jobdir: Path) -> None:
        """Stop the supervisor's whole session, then wait until it is gone, so that
        it cannot write into a folder a new job of the same name gets."""
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not _pid_runs(pid, jobdir):
                return
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _pid_runs(pid, jobdir):
                time.sleep(0.02)
        if _pid_runs(pid, jobdir):
            raise BackendError(f"local job supervisor {pid} did not stop after SIGKILL")

    def ping(self) -> None:
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendUnavailable(f"local job folder {self.jobs_dir} is unusable: {e}") from e
        if not os.access(self.jobs_dir, os.W_OK):
            raise BackendUnavailable(f"local job folder {self.jobs_dir} is not writable")


def _to_host(arg: str, incoming: str, outgoing: str) -> str:
    """Rewrite a container path to the host folder it stands for."""
    for container_path, host_path in ((INCOMING, incoming), (OUTGOING, outgoing)):
        if arg == container_path or arg.startswith(container_path + "/"):
            return host_path + arg[len(container_path) :]
    return arg
