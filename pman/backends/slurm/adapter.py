"""The slurm backend: pman's jobs as SLURM batch jobs.

Wiring only: the commands are :class:`~pman.backends.slurm.client.SlurmClient`'s
(run by its runner), the script and options :mod:`.script`'s, the states
:mod:`.state`'s, the job folders :mod:`.jobdir`'s and the errors
:mod:`.errors`'s.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pman.backends.base import Backend, Outcome
from pman.backends.kit.errors import ErrorTranslator
from pman.backends.kit.files import tail_lines
from pman.backends.slurm import errors
from pman.backends.slurm.client import QueueRow, SlurmClient
from pman.backends.slurm.config import SlurmConfig
from pman.backends.slurm.config import from_settings as config_from_settings
from pman.backends.slurm.jobdir import JobFolders
from pman.backends.slurm.runner import LocalRunner, SlurmCommandError
from pman.backends.slurm.script import build_script, refusal, sbatch_options
from pman.backends.slurm.state import (
    job_info,
    job_state,
    listed_info,
    pman_jobs,
    slurm_time,
    state_from_files,
    with_outcome,
)
from pman.errors import BackendError, BackendUnavailable, JobExists, JobNotFound, PmanError
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)


class SlurmBackend(Backend):
    name = "slurm"
    # a SLURM job name, a folder name and (with "-<job id>" added) a Docker
    # container name: letters, digits, '_', '.', '-', starting with a letter or digit
    name_pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
    name_rule = (
        "1 to 100 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )

    def __init__(self, client: SlurmClient, config: SlurmConfig) -> None:
        self.client = client
        self.config = config
        self.jobs_dir = config.job_dir
        self.folders = JobFolders(config.job_dir, self.describe(), self.name_pattern)
        self._translate = functools.partial(
            errors.translate, where=self.describe(), timeout=config.engine_timeout
        )
        self.errors = ErrorTranslator(self._translate)

    @classmethod
    def from_settings(cls, settings: Settings) -> SlurmBackend:
        config = config_from_settings(settings)
        runner = LocalRunner(
            bin_dir=config.bin_dir, timeout=config.engine_timeout, conf=config.conf
        )
        return cls(SlurmClient(runner), config)

    def describe(self) -> str:
        return self.config.describe()

    # ---------------------------------------------------------------- submit
    def check(self, spec: JobSpec) -> None:
        """A job the batch script cannot express with the configured runtime."""
        refused = refusal(spec, self.config)
        if refused is not None:
            raise refused

    def submit(self, spec: JobSpec) -> JobInfo:
        self.check(spec)
        name = spec.name
        jobdir = self.folders.path(name)
        script = build_script(spec, self.config, jobdir)
        options = sbatch_options(spec, self.config, jobdir)
        self.folders.make_root()
        self._claim(spec)
        now = datetime.now(UTC)
        meta: dict[str, Any] = {
            "name": name,
            "slurm_id": None,
            "image": spec.image,
            "command": spec.command,
            "fingerprint": spec.fingerprint,
            "labels": spec.labels,
            "workers": spec.resources.number_of_workers,
            "memory_limit": spec.resources.memory_limit,
            "timelimit": self.config.timelimit_minutes,
            "runtime": self.config.runtime,
            "created_at": now.isoformat(),
        }
        try:
            slurm_id = self.client.sbatch(options, self.folders.write_job(name, script, meta))
        except PmanError:
            self.folders.discard(name)
            raise
        except Exception as e:
            self.folders.discard(name)
            raise self._submit_error(e, spec) from e
        meta["slurm_id"] = slurm_id
        try:
            self.folders.write_meta(name, meta)
        except OSError as e:
            # SLURM has the job but pman could not note its id: cancel it
            try:
                self.client.scancel(slurm_id)
            except SlurmCommandError:
                log.exception("could not cancel SLURM job %s after a failed submit", slurm_id)
            self.folders.discard(name)
            raise BackendError(f"cannot write the job record in {jobdir}: {e}") from e
        return JobInfo(
            name=name,
            state=JobState.QUEUED,
            image=spec.image,
            command=spec.command,
            message=f"submitted to SLURM as job {slurm_id}",
            created_at=now,
            fingerprint=spec.fingerprint,
            native_id=slurm_id,
            labels=spec.labels,
        )

    def _submit_error(self, e: Exception, spec: JobSpec) -> PmanError:
        """sbatch's complaints about the request are 400s naming its fields."""
        return self._translate(
            e,
            f"submitting job {spec.name!r} with sbatch",
            request=lambda err: errors.request_error(err, spec, lambda: self._fields_too_big(spec)),
        )

    def _fields_too_big(self, spec: JobSpec) -> list[str]:
        try:
            nodes = self.client.node_limits(self.config.partition)
        except SlurmCommandError:
            nodes = None
        return errors.fields_too_big(spec.resources, nodes)

    def _claim(self, spec: JobSpec) -> None:
        """Make the job's folder; JobExists when a submitted job has it."""
        if self.folders.create(spec.name):
            return
        try:
            meta = self.folders.meta(spec.name)
        except (JobNotFound, BackendError):
            meta = {}
        if meta.get("slurm_id"):
            raise JobExists(
                f"a SLURM job named {spec.name!r} exists already",
                existing=self.find(spec.name),
            )
        # left by a submission that never reached SLURM (pman stopped in between)
        self.folders.discard(spec.name)
        jobdir = self.folders.path(spec.name)
        try:
            jobdir.mkdir()
        except OSError as e:
            raise JobExists(f"job folder {jobdir} is in use: {e}") from e

    # ---------------------------------------------------------------- state
    def _squeue(self, all_states: bool, job_id: str | None = None) -> list[QueueRow]:
        with self.errors.doing("listing jobs with squeue"):
            return self.client.squeue(all_states=all_states, job_id=job_id)

    def get(self, name: str) -> JobInfo:
        meta = self.folders.meta(name)
        workers = int(meta.get("workers") or 1)
        memory = int(meta.get("memory_limit") or 0)
        timelimit = int(meta.get("timelimit") or self.config.timelimit_minutes)
        slurm_id = meta.get("slurm_id")
        base = JobInfo(
            name=name,
            state=JobState.QUEUED,
            image=str(meta.get("image", "")),
            command=list(meta.get("command") or []),
            created_at=slurm_time(str(meta.get("created_at") or "")),
            fingerprint=meta.get("fingerprint"),
            native_id=slurm_id,
            labels=dict(meta.get("labels") or {}),
        )
        if not slurm_id:
            return with_outcome(base, Outcome(JobState.QUEUED, message="submitting"))
        rows = [r for r in self._squeue(True, str(slurm_id)) if r.array_job_id == str(slurm_id)]
        files = self.folders.worker_files(name)
        if not rows:
            return with_outcome(base, state_from_files(files, workers, memory))
        return job_info(base, rows, job_state(rows, workers, memory, timelimit, files))

    def _infos(self, rows: list[QueueRow], check_files: bool) -> list[JobInfo]:
        """pman's jobs among squeue's rows, one per job name (its latest
        submission); with ``check_files``, only those whose folder names that
        submission (a deleted job stays in squeue until MinJobAge)."""
        infos = []
        for job in pman_jobs(rows):
            if check_files:
                try:
                    if str(self.folders.meta(job.name).get("slurm_id")) != job.job_id:
                        continue
                except (JobNotFound, BackendError):
                    continue
            infos.append(listed_info(job, self.config.timelimit_minutes))
        return infos

    def list(self) -> list[JobInfo]:
        """Every pman job SLURM still knows, in one squeue call (finished ones
        for MinJobAge), reading the job folder of each to skip deleted ones."""
        return self._infos(self._squeue(True), check_files=True)

    def list_active(self) -> list[JobInfo]:
        """pman's unfinished jobs, in one squeue call whatever their number."""
        return self._infos(self._squeue(False), check_files=False)

    # ---------------------------------------------------------------- logs
    def logs(self, name: str, tail: int) -> str:
        self.folders.meta(name)
        try:
            return tail_lines(self.folders.log(name), tail)
        except OSError as e:
            raise BackendError(f"cannot read the log of {name!r}: {e}") from e

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The job's ``log`` file (every worker's output), read in chunks."""
        self.folders.meta(name)
        # a followed job is asked about (one squeue) once a second at most
        return self._file_logs(name, self.folders.log(name), tail, since, follow, poll=1.0)

    # ---------------------------------------------------------------- stop
    def cancel(self, name: str) -> None:
        """scancel, keeping the job folder (log, status files); the script's
        signal handler stops a docker/podman container itself."""
        self._scancel(name, self.folders.meta(name))

    def _scancel(self, name: str, meta: dict[str, Any]) -> None:
        slurm_id = meta.get("slurm_id")
        if not slurm_id:
            return
        with self.errors.doing(f"cancelling job {name!r} (SLURM job {slurm_id})"):
            try:
                self.client.scancel(str(slurm_id))
            except SlurmCommandError as e:
                # finished already, or forgotten by SLURM: nothing to stop
                if not errors.nothing_to_cancel(e):
                    raise

    def delete(self, name: str) -> None:
        try:
            meta = self.folders.meta(name)
        except JobNotFound:
            return
        self._scancel(name, meta)
        # the script's signal handler removes a running container by itself;
        # its log and status files may go now (it holds them open, if anything)
        self.folders.remove(name)

    def ping(self) -> None:
        with self.errors.doing("answering a ping (scontrol ping)"):
            out = self.client.ping()
        if "UP" not in out:
            raise BackendUnavailable(f"{self.describe()}: slurmctld is not up: {out.strip()}")
