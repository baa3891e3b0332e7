"""Jobs as host processes in a bubblewrap sandbox, no engine needed: pman's embedded default.

The job's command runs as an unprivileged user (PMAN_LOCAL_USER, default
nobody) in a sandbox that shows it only the host's system folders, its input
folder read-only and its output folder read-write
(:mod:`pman.backends.local_sandbox`), in a cgroup of its own that holds it to
its cpu_limit and memory_limit where the kernel lets pman make one
(:mod:`pman.backends.local_cgroup`). The image is recorded but not used; GPUs
and several workers are refused. Each job is a folder under
``PMAN_DATA_DIR/local/jobs`` kept by a detached supervisor
(:mod:`pman.backends.local_runner`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pman.backends import local_cgroup
from pman.backends.base import Backend
from pman.backends.local_cgroup import CgroupSupport
from pman.backends.local_runner import write_json
from pman.backends.local_sandbox import (
    Bind,
    JobUser,
    build,
    find_bwrap,
    probe,
    resolve_user,
    shown_by_system,
)
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
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
    #: killed by the kernel for its memory_limit (the job's cgroup counted it)
    "oom_killed": JobState.FAILED,
    "not_started": JobState.SYSTEM_ERROR,
    "vanished": JobState.SYSTEM_ERROR,
    #: ended after a cancel (``cancelled.json``), however its process ended
    "cancelled": JobState.CANCELLED,
}

_SUBMIT_GRACE_S = 10.0
#: the smallest memory_limit the local backend enforces, as Docker (bwrap and
#: a shell need a few MiB before the job's own program starts)
MIN_MEMORY_MIB = 6


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

    def __init__(
        self,
        jobs_dir: Path,
        storebase: Path | None,
        *,
        bwrap: str | None = None,
        user: JobUser | None = None,
        cgroups: CgroupSupport | None = None,
        read_only_paths: tuple[Path, ...] = (),
        data_dir: Path | None = None,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.storebase = storebase
        #: None only for a backend that reads job folders and never submits (tests)
        self.bwrap = bwrap
        self.user = user
        self.cgroups = cgroups or CgroupSupport()
        self.read_only_paths = read_only_paths
        self.data_dir = data_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        """Check everything a job needs, at start-up: bwrap, the job user, a sandbox
        that really starts (user namespaces allowed), the cgroups that can be used."""
        bwrap = find_bwrap()
        if bwrap is None:
            raise ConfigError(
                "the local backend runs every job in a bubblewrap sandbox, and bwrap is not "
                "installed (not on PATH, nor in /usr/bin): apt-get install bubblewrap "
                "(scripts/dev.sh run and test install it)",
                fields={"CONTAINER_ENV": "local needs bwrap (Debian package bubblewrap)"},
            )
        problems: dict[str, str] = {}
        user: JobUser | None = None
        try:
            user = resolve_user(settings.local_user)
        except ValueError as e:
            problems["PMAN_LOCAL_USER"] = str(e)
        forbidden = _private_paths(settings.storebase, settings.data_dir)
        unusable = []
        for path in settings.local_read_only_paths:
            real = os.path.realpath(path)
            clash = next((what for p, what in forbidden if _overlap(real, p)), None)
            if not path.exists():
                unusable.append(f"{path} does not exist")
            elif clash:
                unusable.append(f"{path} overlaps {clash} (jobs would see data not theirs)")
        if unusable:
            problems["PMAN_LOCAL_READ_ONLY_PATHS"] = "; ".join(unusable)
        if problems or user is None:
            lines = "\n".join(f"  {k}: {v}" for k, v in sorted(problems.items()))
            raise ConfigError(f"invalid configuration:\n{lines}", fields=problems)
        failure = probe(bwrap, user)
        if failure is not None:
            raise ConfigError(
                f"the local backend cannot start a job sandbox ({bwrap}, as {user}): {failure}. "
                "bwrap needs unprivileged user namespaces (sysctl user.max_user_namespaces > 0, "
                "and kernel.unprivileged_userns_clone=1 where the kernel has it)",
                fields={"CONTAINER_ENV": f"bwrap cannot start a sandbox: {failure}"},
            )
        cgroups = CgroupSupport() if settings.ignore_limits else local_cgroup.detect()
        backend = cls(
            settings.data_dir / "local" / "jobs",
            settings.storebase,
            bwrap=bwrap,
            user=user,
            cgroups=cgroups,
            read_only_paths=settings.local_read_only_paths,
            data_dir=settings.data_dir,
        )
        who = f"as {user}" if user.switch else f"as pman's own {user}, in a user namespace"
        if settings.ignore_limits:
            limits = "IGNORE_LIMITS=yes: cpu_limit and memory_limit are not enforced"
        else:
            limits = "; ".join(cgroups.describe(c) for c in local_cgroup.CONTROLLERS)
        level = logging.INFO
        if not user.switch or (cgroups.problems and not settings.ignore_limits):
            level = logging.WARNING
        log.log(level, "local backend: jobs run in a bubblewrap sandbox %s; %s", who, limits)
        return backend

    def describe(self) -> str:
        return f"local processes in bubblewrap sandboxes (job records in {self.jobs_dir})"

    def _dir(self, name: str) -> Path:
        if not self.name_pattern.fullmatch(name):  # never a path out of jobs_dir
            raise JobNotFound(f"no local job named {name!r}")
        return self.jobs_dir / name

    # ------------------------------------------------------------------ submit
    def submit(self, spec: JobSpec) -> JobInfo:
        if self.bwrap is None or self.user is None:
            raise BackendUnavailable("this local backend was built without a sandbox")
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
        if spec.uid is not None or spec.gid is not None:
            raise UnsupportedOption(
                "CONTAINER_USER is not supported by the local backend: jobs run as PMAN_LOCAL_USER"
            )
        memory = spec.resources.memory_limit
        if "memory" in self.cgroups.parents and memory < MIN_MEMORY_MIB:
            raise UnsupportedOption(
                f"memory_limit {memory} MiB is below the local backend's minimum of "
                f"{MIN_MEMORY_MIB} MiB",
                fields={"memory_limit": f"at least {MIN_MEMORY_MIB} MiB"},
            )
        program, program_binds = self._program(spec.command[0])
        incoming, outgoing = str(m.input_host), str(m.output_host)
        # the command names the host folders, as this backend always did, unless
        # those clash with /share where the job also sees them
        at_host = not any(_overlap(p, "/share") for p in (incoming, outgoing))
        command = list(spec.command)
        if at_host:
            command = [_to_host(a, incoming, outgoing) for a in command]
        command[0] = program
        folders = [Bind(incoming, incoming), Bind(outgoing, outgoing, writable=True)]
        folders = sorted(folders, key=lambda b: len(Path(b.dest).parts)) if at_host else []
        binds = [
            *(Bind(str(p), str(p)) for p in self.read_only_paths),
            *program_binds,
            *folders,
            Bind(incoming, INCOMING),
            Bind(outgoing, OUTGOING, writable=True),
        ]
        env = {"PATH": os.environ.get("PATH", ""), **dict(e.split("=", 1) for e in spec.env)}
        try:
            cwd = outgoing if at_host else OUTGOING
            run = build(self.bwrap, self.user, binds, command, env, cwd)
        except ValueError as e:
            raise UnsupportedOption(str(e), fields={"env": str(e)}) from e
        self._give_output_folder(m.output_host)
        cgroup = None
        if self.cgroups.parents:
            # a random tail: a job of the same name later never meets this one's cgroup
            leaf = f"{spec.name}-{secrets.token_hex(4)}"
            cgroup = local_cgroup.plan(self.cgroups, leaf, memory, spec.resources.cpu_limit)

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
            "run": run,
            "cgroup": cgroup,
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

    def _program(self, name: str) -> tuple[str, list[Bind]]:
        """The job's program as the command names it, and the binds that show it
        in the sandbox when the system folders do not (e.g. a script in the
        operator's own folder, or a link in such a folder to a system program)."""
        found = shutil.which(name)
        if found is None:
            raise UnsupportedOption(
                f"entrypoint {name!r} is not an executable on this host",
                fields={"entrypoint": "not found on the host"},
            )
        path = os.path.abspath(found)
        real = os.path.realpath(path)
        for private, what in _private_paths(self.storebase, self.data_dir):
            if _inside(real, private) or _inside(path, private):
                raise UnsupportedOption(
                    f"entrypoint {name!r} is a file in {what}: a job may not run it",
                    fields={"entrypoint": f"inside {what}"},
                )
        binds = []
        if not self._shown(real):
            binds.append(Bind(real, real))
        if path != real and not self._shown(path):
            binds.append(Bind(real, path))
        # a relative path would be taken from the job's folder, not from where pman found it
        named = path if "/" in name and not name.startswith("/") else name
        return named, binds

    def _shown(self, path: str) -> bool:
        return shown_by_system(path) or any(_inside(path, str(p)) for p in self.read_only_paths)

    def _give_output_folder(self, folder: Path) -> None:
        """Make the output folder the job user's when pman made it (as root):
        the job has no capability to write into a folder it does not own."""
        assert self.user is not None
        if not self.user.switch:
            return
        try:
            if folder.stat().st_uid == os.geteuid():
                os.chown(folder, self.user.uid, self.user.gid)
        except OSError as e:
            raise BackendError(f"cannot give the output folder to the job's user: {e}") from e

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
            elif result.get("oom"):
                mib = (spec.get("cgroup") or {}).get("memory_mib")
                phase, reason = "oom_killed", "oom_killed"
                message = f"killed: out of memory (memory_limit {mib} MiB), exit code {exit_code}"
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
        self._remove_cgroup(jobdir)

    # ------------------------------------------------------------------ delete
    def delete(self, name: str) -> None:
        jobdir = self._dir(name)
        if not jobdir.exists():
            return
        runner = _read_json(jobdir / "runner.json")
        if runner is not None:
            self._kill_group(runner["pid"], runner["pgid"], jobdir)
        self._remove_cgroup(jobdir)
        shutil.rmtree(jobdir, ignore_errors=True)

    @staticmethod
    def _remove_cgroup(jobdir: Path) -> None:
        """Remove what a supervisor killed with SIGKILL left of the job's cgroup
        (a supervisor that ends normally removes it itself)."""
        try:
            spec = _read_json(jobdir / "spec.json")
        except BackendError:
            return
        cgroup = (spec or {}).get("cgroup")
        if cgroup:
            for problem in local_cgroup.remove(cgroup):
                log.warning("local job %s: %s", jobdir.name, problem)

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


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _overlap(a: str, b: str) -> bool:
    """True when one of two absolute paths is the other or inside it."""
    return _inside(a, b) or _inside(b, a)


def _private_paths(storebase: Path | None, data_dir: Path | None) -> list[tuple[str, str]]:
    """The folders no job may see beyond its own two (real paths, with their names)."""
    found = []
    for path, what in ((storebase, "STOREBASE"), (data_dir, "PMAN_DATA_DIR")):
        if path is not None:
            found.append((os.path.realpath(path), what))
    return found


def _to_host(arg: str, incoming: str, outgoing: str) -> str:
    """Rewrite a container path to the host folder it stands for."""
    for container_path, host_path in ((INCOMING, incoming), (OUTGOING, outgoing)):
        if arg == container_path or arg.startswith(container_path + "/"):
            return host_path + arg[len(container_path) :]
    return arg
