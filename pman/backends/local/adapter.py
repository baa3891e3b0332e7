"""The local backend: pman's calls wired to job folders, each kept by a
detached supervisor (:mod:`.runner`) that runs the job in its sandbox
(:mod:`.sandbox`, planned by :mod:`.plan`) and cgroup (:mod:`.cgroup`)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pman.backends.base import SINGLE, Backend, Capabilities
from pman.backends.kit.files import tail_lines
from pman.backends.local import cgroup as local_cgroup
from pman.backends.local.cgroup import CgroupSupport
from pman.backends.local.config import LocalConfig, private_paths
from pman.backends.local.jobdir import (
    pid_runs,
    read_json,
    remove_cgroup,
    stop_supervisor,
    write_json,
)
from pman.backends.local.plan import find_program, sandbox_run
from pman.backends.local.sandbox import JobUser, find_bwrap, probe, resolve_user
from pman.backends.local.state import job_info
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

_SUBMIT_GRACE_S = 10.0
#: the smallest memory_limit the local backend enforces, as Docker (bwrap and
#: a shell need a few MiB before the job's own program starts)
MIN_MEMORY_MIB = 6
#: the supervisor of one job: ``python -m RUNNER JOBDIR``
RUNNER = "pman.backends.local.runner"


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
        return cls.from_config(LocalConfig.from_settings(settings))

    @classmethod
    def from_config(cls, config: LocalConfig) -> LocalBackend:
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
            user = resolve_user(config.user)
        except ValueError as e:
            problems["PMAN_LOCAL_USER"] = str(e)
        unusable = config.read_only_problems()
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
        cgroups = CgroupSupport() if config.ignore_limits else local_cgroup.detect()
        backend = cls(
            config.jobs_dir,
            config.storebase,
            bwrap=bwrap,
            user=user,
            cgroups=cgroups,
            read_only_paths=config.read_only_paths,
            data_dir=config.data_dir,
        )
        who = f"as {user}" if user.switch else f"as pman's own {user}, in a user namespace"
        if config.ignore_limits:
            limits = "IGNORE_LIMITS=yes: cpu_limit and memory_limit are not enforced"
        else:
            limits = "; ".join(cgroups.describe(c) for c in local_cgroup.CONTROLLERS)
        level = logging.INFO
        if not user.switch or (cgroups.problems and not config.ignore_limits):
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
    @property
    def capabilities(self) -> Capabilities:
        return SINGLE

    def check(self, spec: JobSpec) -> None:
        """GPUs, several workers, CONTAINER_USER, storage that is not the
        host's and a memory_limit below what a sandbox needs are refused."""
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

    def submit(self, spec: JobSpec) -> JobInfo:
        if self.bwrap is None or self.user is None:
            raise BackendUnavailable("this local backend was built without a sandbox")
        self.check(spec)
        private = private_paths(self.storebase, self.data_dir)
        program, program_binds = find_program(spec.command[0], private, self.read_only_paths)
        run = sandbox_run(spec, program, program_binds, self.bwrap, self.user, self.read_only_paths)
        assert spec.mounts.output_host is not None  # check(): host storage
        self._give_output_folder(spec.mounts.output_host)
        cgroup = None
        if self.cgroups.parents:
            # a random tail: a job of the same name later never meets this one's cgroup
            leaf = f"{spec.name}-{secrets.token_hex(4)}"
            cgroup = local_cgroup.plan(
                self.cgroups, leaf, spec.resources.memory_limit, spec.resources.cpu_limit
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
            existing = self.find(spec.name)
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
                # -P: the installed pman's runner, never one in pman's working folder
                [sys.executable, "-P", "-m", RUNNER, str(jobdir)],
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
    def get(self, name: str) -> JobInfo:
        jobdir = self._dir(name)
        spec = read_json(jobdir / "spec.json")
        if spec is None:
            raise JobNotFound(f"no local job named {name!r}")
        runner = read_json(jobdir / "runner.json")
        alive = runner is not None and pid_runs(runner["pid"], jobdir)
        # read after the liveness check: a supervisor writes its result before
        # it ends, so one found gone here has left its result to read
        started = read_json(jobdir / "started.json")
        result = read_json(jobdir / "result.json")
        cancelled = (jobdir / "cancelled.json").exists()
        return job_info(name, spec, runner, alive, started, result, cancelled, time.time())

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

    def _known_dir(self, name: str) -> Path:
        """The folder of an existing job; JobNotFound if there is none."""
        jobdir = self._dir(name)
        if not (jobdir / "spec.json").exists():
            raise JobNotFound(f"no local job named {name!r}")
        return jobdir

    def logs(self, name: str, tail: int) -> str:
        return tail_lines(self._known_dir(name) / "output.log", tail)

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        jobdir = self._known_dir(name)
        return self._file_logs(name, jobdir / "output.log", tail, since, follow)

    # ------------------------------------------------------------------ stop
    def cancel(self, name: str) -> None:
        """Stop the job's processes as DELETE does, but keep its folder (logs,
        outcome). ``cancelled.json`` tells a supervisor that has not started
        the command yet not to, and ``get`` that the job was cancelled."""
        jobdir = self._known_dir(name)
        if (jobdir / "result.json").exists():
            return
        write_json(jobdir / "cancelled.json", {"cancelled_at": datetime.now(UTC).isoformat()})
        runner = read_json(jobdir / "runner.json")
        if runner is not None:
            stop_supervisor(runner["pid"], runner["pgid"], jobdir)
        remove_cgroup(jobdir)

    def delete(self, name: str) -> None:
        jobdir = self._dir(name)
        if not jobdir.exists():
            return
        runner = read_json(jobdir / "runner.json")
        if runner is not None:
            stop_supervisor(runner["pid"], runner["pgid"], jobdir)
        remove_cgroup(jobdir)
        shutil.rmtree(jobdir, ignore_errors=True)

    def ping(self) -> None:
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendUnavailable(f"local job folder {self.jobs_dir} is unusable: {e}") from e
        if not os.access(self.jobs_dir, os.W_OK):
            raise BackendUnavailable(f"local job folder {self.jobs_dir} is not writable")
