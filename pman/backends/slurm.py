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
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote

from pman.backends.base import Backend, Outcome
from pman.backends.local import tail_lines
from pman.backends.slurm_client import QueueRow, SlurmClient, SlurmCommandError
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.labels import LABEL_AUID, LABEL_FINGERPRINT, LABEL_INSTANCE, LABEL_MANAGED
from pman.models import INCOMING, OUTGOING, JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: SLURM job state -> (JobState, words for messages).
#: https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
#: https://slurm.schedmd.com/job_state_codes.html
#: A job is finished only once it left COMPLETING: its processes (and the
#: script's clean-up of its container) are done and its output is final.
SLURM_STATES: dict[str, tuple[JobState, str]] = {
    "PENDING": (JobState.QUEUED, "pending"),
    "CONFIGURING": (JobState.QUEUED, "waiting for its nodes to be ready"),
    "REQUEUED": (JobState.QUEUED, "requeued"),
    "REQUEUE_FED": (JobState.QUEUED, "requeued by the federation"),
    "REQUEUE_HOLD": (JobState.QUEUED, "held after a requeue"),
    "RESV_DEL_HOLD": (JobState.QUEUED, "held: its reservation was deleted"),
    "RUNNING": (JobState.RUNNING, "running"),
    "COMPLETING": (JobState.RUNNING, "completing"),
    "RESIZING": (JobState.RUNNING, "resizing"),
    "SIGNALING": (JobState.RUNNING, "being signalled"),
    "STAGE_OUT": (JobState.RUNNING, "staging out"),
    # paused with its allocation kept (STOPPED) or released (SUSPENDED): it resumes
    "SUSPENDED": (JobState.RUNNING, "suspended"),
    "STOPPED": (JobState.RUNNING, "stopped (SIGSTOP)"),
    "COMPLETED": (JobState.SUCCEEDED, "completed"),
    "FAILED": (JobState.FAILED, "failed"),
    # the job's own doing: it ran out of its time or memory
    "TIMEOUT": (JobState.FAILED, "killed: time limit reached"),
    "OUT_OF_MEMORY": (JobState.FAILED, "killed: out of memory"),
    # held after an exit code the site marks special (RequeueExitHold)
    "SPECIAL_EXIT": (JobState.FAILED, "ended with a special exit code"),
    "CANCELLED": (JobState.CANCELLED, "cancelled"),
    # the infrastructure's doing: the job could not run (to its end)
    "NODE_FAIL": (JobState.SYSTEM_ERROR, "its node failed"),
    "BOOT_FAIL": (JobState.SYSTEM_ERROR, "its node failed to boot"),
    "PREEMPTED": (JobState.SYSTEM_ERROR, "preempted by another job"),
    "DEADLINE": (JobState.SYSTEM_ERROR, "could not run before its deadline"),
    "REVOKED": (JobState.SYSTEM_ERROR, "revoked: a sibling cluster of the federation runs it"),
}

#: first word of the --comment of every job pman submits
COMMENT_MARKER = "pman"
RUNTIMES_WITH_ENGINE = ("docker", "podman")
#: the environment the batch script starts with (sbatch --export=NONE: pman's
#: own environment, with its secrets, never reaches a job)
SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: SLURM's words in sbatch errors that mean slurmctld did not answer
_UNREACHABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "zero bytes were transmitted",
    "communication connection failure",
    "transport endpoint",
    "slurm_persist_conn_open",
)
#: sbatch errors caused by the request's resources
_RESOURCE_ERRORS = (
    "requested node configuration is not available",
    "memory specification can not be satisfied",
    "more processors requested than permitted",
    "cpu count per node can not be satisfied",
    "invalid generic resource",
    "invalid gres",
    "node count specification invalid",
)


def encode_comment(instance: str, fingerprint: str, auid: str, workers: int) -> str:
    """The --comment that marks a job as pman's; values are %-quoted (no spaces,
    no '|', so squeue's output stays parseable)."""
    fields = {"instance": instance, "fingerprint": fingerprint, "workers": str(workers)}
    fields["auid"] = auid
    return ";".join([COMMENT_MARKER, *(f"{k}={quote(v, safe='')}" for k, v in fields.items())])


def parse_comment(comment: str) -> dict[str, str] | None:
    """The fields of a pman comment, None for a job pman did not submit."""
    parts = comment.split(";")
    if parts[0] != COMMENT_MARKER:
        return None
    fields = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = unquote(value)
    return fields


def decode_exit_status(status: int | None) -> tuple[int | None, int]:
    """(exit code, signal) of a raw wait status as squeue's exit_code and
    slurmrestd report it: exit code = status >> 8, signal = status & 0x7f."""
    if status is None:
        return None, 0
    return (status >> 8) & 0xFF, status & 0x7F


def parse_slurm_time(text: str) -> datetime | None:
    """SLURM prints local time without a zone; "N/A", "Unknown", "NONE" are no time."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is None else parsed


def state_of(slurm_state: str) -> tuple[JobState, str]:
    """The row of SLURM_STATES for a state as squeue prints it (flags after a
    space or '+', as in "CANCELLED by 0", are dropped); UNKNOWN with a warning."""
    name = re.split(r"[ +]", slurm_state.strip(), maxsplit=1)[0].upper()
    if name not in SLURM_STATES:
        log.warning("unknown SLURM job state %r", slurm_state)
        return JobState.UNKNOWN, f"SLURM state {slurm_state!r}"
    return SLURM_STATES[name]


@dataclass(frozen=True)
class WorkerFiles:
    """What the batch script recorded about one worker."""

    exit_code: int | None = None
    oom: bool = False
    error: str = ""


def worker_of(row: QueueRow) -> int:
    return row.array_task_id if row.array_task_id is not None else 1


def _ended(
    row: QueueRow,
    files: WorkerFiles,
    memory_limit: int,
    timelimit: int,
    workers: int,
) -> Outcome:
    state, words = state_of(row.state)
    name = re.split(r"[ +]", row.state.strip(), maxsplit=1)[0].upper()
    who = f"worker {worker_of(row)}: " if workers > 1 else ""
    code, signal = decode_exit_status(row.exit_status)
    # the command's own exit code, as the script saw it, is the truest
    if files.exit_code is not None:
        code, signal = files.exit_code, 0
    elif signal and not code and signal < 125:
        code = 128 + signal
    elif signal:
        code = None  # SLURM's own marker (0:125 for an OOM kill), no exit code
    if files.error:
        return Outcome(JobState.SYSTEM_ERROR, "start_failed", f"{who}{files.error}", code)
    if name == "TIMEOUT":
        return Outcome(
            state,
            "timeout",
            f"{who}killed: time limit of {timelimit} min reached (SLURM state TIMEOUT)",
            code,
        )
    if name == "OUT_OF_MEMORY" or files.oom:
        return Outcome(
            JobState.FAILED,
            "oom_killed",
            f"{who}killed: out of memory (memory_limit {memory_limit} MiB)"
            + (f", exit code {code}" if code is not None else "")
            + (" (SLURM state OUT_OF_MEMORY)" if name == "OUT_OF_MEMORY" else ""),
            code,
        )
    if state is JobState.SUCCEEDED:
        return Outcome(state, "", f"{who}exited with code 0", 0)
    if state is JobState.FAILED:
        what = f"exited with code {code}" if code is not None else words
        if name != "FAILED":
            what += f" (SLURM state {name})"
        return Outcome(state, "exit_code", f"{who}{what}", code)
    if state is JobState.CANCELLED:
        return Outcome(state, "cancelled", f"{who}cancelled (scancel)", code)
    return Outcome(state, name.lower(), f"{who}{words} (SLURM state {name})", code)


def job_state(
    rows: list[QueueRow],
    workers: int,
    memory_limit: int,
    timelimit: int,
    files: dict[int, WorkerFiles] | None = None,
) -> Outcome:
    """The job's state from the squeue rows of its tasks (one per worker).

    As for a swarm service, the job is decided once every worker has ended,
    so its output folder is final: then a system error outweighs a failure,
    a failure a cancellation, and success needs every worker's. A worker
    squeue does not list (the active-only view leaves finished tasks out)
    counts as ended.
    """
    files = files or {}
    live: list[tuple[QueueRow, JobState, str]] = []
    ended: list[tuple[QueueRow, JobState]] = []
    for row in sorted(rows, key=worker_of):
        state, words = state_of(row.state)
        if state.finished:
            ended.append((row, state))
        else:
            live.append((row, state, words))
    if live:
        states = {s for _, s, _ in live}
        if JobState.RUNNING in states or ended or len(rows) < workers:
            running = sum(1 for _, s, _ in live if s is JobState.RUNNING)
            message = "running" if workers == 1 else f"{running} of {workers} workers running"
            return Outcome(JobState.RUNNING, message=message)
        if JobState.UNKNOWN in states:
            return Outcome(JobState.UNKNOWN, "unknown_status", live[0][2])
        row, _, words = live[0]
        reason = row.reason if row.reason and row.reason not in ("None", "(null)") else ""
        return Outcome(JobState.QUEUED, message=words + (f": {reason}" if reason else ""))
    if not ended:
        return Outcome(JobState.QUEUED, message="submitted")
    outcomes = [
        _ended(row, files.get(worker_of(row), WorkerFiles()), memory_limit, timelimit, workers)
        for row, _ in ended
    ]
    for wanted in (JobState.SYSTEM_ERROR, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN):
        for outcome in outcomes:
            if outcome.state is wanted:
                return outcome
    return Outcome(
        JobState.SUCCEEDED,
        message="exited with code 0" if workers == 1 else f"all {workers} workers exited with 0",
        exit_code=0,
    )


def state_from_files(files: dict[int, WorkerFiles], workers: int, memory_limit: int) -> Outcome:
    """The state of a job SLURM no longer knows (older than MinJobAge, or lost
    by slurmctld), from what its script recorded; SYSTEM_ERROR if it recorded
    too little."""
    if len(files) < workers or any(f.exit_code is None and not f.error for f in files.values()):
        return Outcome(
            JobState.SYSTEM_ERROR,
            "vanished",
            "SLURM no longer knows the job and its script recorded no end for every worker "
            "(killed, or its node failed?)",
        )
    rows = [
        QueueRow(
            job_id="",
            array_job_id="",
            array_task_id=i if workers > 1 else None,
            state="COMPLETED" if f.exit_code == 0 and not f.error else "FAILED",
            exit_status=None,
            submit_time="",
            start_time="",
            end_time="",
            reason="",
            name="",
            comment="",
        )
        for i, f in sorted(files.items())
    ]
    return job_state(rows, workers, memory_limit, 0, files)


# ---------------------------------------------------------------- the script
def container_name(jid: str) -> str:
    """The container's name on the node, as a shell word: unique per worker
    and per submission (SLURM_JOB_ID differs for each array task)."""
    return f'{shlex.quote(jid)}-"$SLURM_JOB_ID"'


def host_paths(spec: JobSpec, storebase: Path | None) -> tuple[str, str]:
    """STOREBASE/input_dir and STOREBASE/output_dir as paths on the nodes."""
    m = spec.mounts
    base = str(storebase or "").rstrip("/")
    incoming = str(m.input_host) if m.input_host else f"{base}/{m.input_dir}".rstrip("/")
    outgoing = str(m.output_host) if m.output_host else f"{base}/{m.output_dir}"
    return incoming, outgoing


def to_host(text: str, incoming: str, outgoing: str) -> str:
    """Rewrite /share/incoming and /share/outgoing (alone or as a path prefix,
    anywhere in ``text``, e.g. ``--out=/share/outgoing/x``) to the real folders."""
    pattern = re.compile(r"(?<![\w/.-])(/share/incoming|/share/outgoing)(?=/|$|[^\w.-])")
    return pattern.sub(lambda m: incoming if m.group(1) == INCOMING else outgoing, text)


def apptainer_image(image: str) -> str:
    """An OCI reference for apptainer: a plain image name is a docker:// one;
    a path to a .sif file or a URI with a scheme is taken as it is."""
    if "://" in image or image.startswith("/") or image.endswith(".sif"):
        return image
    return f"docker://{image}"


_PREAMBLE = """#!/bin/bash
# pman job @JID@: @WORKERS@ worker(s), container runtime @RUNTIME@.
# Written by pman; the job's files are in @JOB_DIR@.
set -u
export PATH=@PATH@
job_dir=@JOB_DIR_Q@
worker=${SLURM_ARRAY_TASK_ID:-1}
export PMAN_WORKER_INDEX=$worker PMAN_NUMBER_OF_WORKERS=@WORKERS@
# record(NAME, TEXT): what happened to this worker, for pman
record() {
  printf '%s\\n' "$2" >"$job_dir/.$1.$worker" && mv -f "$job_dir/.$1.$worker" "$job_dir/$1.$worker"
}
child=""
"""

_ENGINE = """engine=@ENGINE@
container=@CONTAINER@
if ! command -v "$engine" >/dev/null 2>&1; then
  echo "pman: $engine is not installed on node $(hostname)" >&2
  record error "$engine is not installed on node $(hostname)"
  exit 125
fi
# (podman's rm -f would wait 10 s for the container to stop: as long as SLURM's KillWait)
remove() { "$engine" rm -f @RM_NOW@"$container" >/dev/null 2>&1; }
# SLURM signals the job's processes on scancel and at its time limit; the
# container is the engine's child, not ours: remove it before SLURM's SIGKILL
on_signal() {
  trap - TERM INT HUP USR1 USR2 XCPU
  echo "pman: the job was signalled (cancelled or out of time): removing container $container" >&2
  remove
  if [ -n "$child" ]; then wait "$child" 2>/dev/null; fi
  remove
  exit 143
}
trap on_signal TERM INT HUP USR1 USR2 XCPU
@GPU_SETUP@"$engine" run --name "$container" \\
  --label org.chrisproject.pman.slurm-job="$SLURM_JOB_ID" \\
@RUN_ARGS@ </dev/null &
child=$!
wait "$child"
rc=$?
oom=$("$engine" inspect --format '{{.State.OOMKilled}}' "$container" 2>/dev/null)
started=$("$engine" inspect --format '{{.State.StartedAt}}' "$container" 2>/dev/null)
remove
if [ "$oom" = true ]; then record oom "OOMKilled"; fi
if [ "$rc" = 125 ] && { [ -z "$started" ] || [ "${started#0001-}" != "$started" ]; }; then
  record error "$engine could not start the container (exit code 125); see the job's logs"
fi
record exit "$rc"
exit "$rc"
"""

_CHILD = """@CHECK@
# SLURM signals every process of the job; pass it on and end with the command
on_signal() {
  trap - TERM INT HUP USR1 USR2 XCPU
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  exit 143
}
trap on_signal TERM INT HUP USR1 USR2 XCPU
@ENV@
@RUN_ARGS@ </dev/null &
child=$!
wait "$child"
rc=$?
record exit "$rc"
exit "$rc"
"""


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _words(words: list[str], indent: str = "  ") -> str:
    """Shell words, one option per line for a readable script."""
    lines: list[str] = []
    for word in words:
        q = shlex.quote(word)
        if lines and not word.startswith("-") and lines[-1].lstrip().startswith("-"):
            lines[-1] += " " + q
        else:
            lines.append(indent + q)
    return " \\\n".join(lines)


def build_script(spec: JobSpec, settings: Settings, job_dir: Path) -> str:
    """The batch script of ``spec``: runs the job's command with the runtime,
    records its exit code, and cleans up its container when signalled."""
    runtime = settings.slurm_container_runtime
    incoming, outgoing = host_paths(spec, settings.storebase)
    r = spec.resources
    head = _fill(
        _PREAMBLE,
        JID=spec.name,
        WORKERS=str(r.number_of_workers),
        RUNTIME=runtime,
        JOB_DIR=str(job_dir),
        JOB_DIR_Q=shlex.quote(str(job_dir)),
        PATH=shlex.quote(SCRIPT_PATH),
    )
    if runtime in RUNTIMES_WITH_ENGINE:
        for field, path in (("input_dir", incoming), ("output_dir", outgoing)):
            if ":" in path:
                raise InvalidJobSpec(
                    f"{field} {path!r} contains ':', which {runtime} cannot bind-mount",
                    fields={field: "contains ':'"},
                )
        args: list[str] = [
            "-v",
            f"{incoming}:{INCOMING}:ro",
            "-v",
            f"{outgoing}:{OUTGOING}:rw",
        ]
        for entry in spec.env:
            args += ["-e", entry]
        args += ["-e", "PMAN_WORKER_INDEX", "-e", "PMAN_NUMBER_OF_WORKERS"]
        for key, value in sorted(settings.job_labels.items()):
            args += ["--label", f"{key}={value}"]
        if not settings.ignore_limits:
            args += [
                f"--memory={r.memory_limit}m",
                f"--memory-swap={r.memory_limit}m",
                f"--cpus={r.cpu_limit / 1000:g}",
            ]
        if settings.shm_size is not None:
            args.append(f"--shm-size={settings.shm_size}m")
        if spec.uid is not None:
            args.append(f"--user={spec.uid}" + (f":{spec.gid}" if spec.gid is not None else ""))
        elif spec.gid is not None:
            args.append(f"--group-add={spec.gid}")
        gpu_setup = ""
        if r.gpu_limit > 0:
            # the GPUs SLURM gave the job (--gres), by index
            if runtime == "docker":
                gpu_setup = (
                    "gpus=${CUDA_VISIBLE_DEVICES:-}\n"
                    f'if [ -n "$gpus" ]; then gpu_args=(--gpus "\\"device=$gpus\\""); '
                    f"else gpu_args=(--gpus {r.gpu_limit}); fi"
                )
            else:
                gpu_setup = (
                    "gpu_args=()\n"
                    'IFS=, read -ra gpu_ids <<<"${CUDA_VISIBLE_DEVICES:-}"\n'
                    'for i in "${gpu_ids[@]}"; do gpu_args+=(--device "nvidia.com/gpu=$i"); done'
                )
        run_args = _words(args)
        if gpu_setup:
            run_args += ' \\\n  "${gpu_args[@]}"'
        run_args += " \\\n  --entrypoint " + shlex.quote(spec.command[0])
        run_args += " \\\n  " + shlex.quote(spec.image)
        if spec.command[1:]:
            run_args += " \\\n  " + " ".join(shlex.quote(a) for a in spec.command[1:])
        body = _fill(
            _ENGINE,
            ENGINE=runtime,
            RM_NOW="--time 0 " if runtime == "podman" else "",
            CONTAINER=container_name(spec.name),
            GPU_SETUP=gpu_setup + "\n" if gpu_setup else "",
            RUN_ARGS=run_args,
        )
        return head + body

    if runtime in ("apptainer", "singularity"):
        prefix = "APPTAINERENV_" if runtime == "apptainer" else "SINGULARITYENV_"
        env_lines = []
        for entry in spec.env:
            key, _, value = entry.partition("=")
            if not _ENV_NAME.fullmatch(key):
                raise UnsupportedOption(
                    f"env {key!r} is not a variable name {runtime} can pass to a job",
                    fields={"env": "names must be letters, digits and '_'"},
                )
            env_lines.append(f"export {prefix}{key}={shlex.quote(value)}")
        for key in ("PMAN_WORKER_INDEX", "PMAN_NUMBER_OF_WORKERS"):
            env_lines.append(f'export {prefix}{key}="${key}"')
        args = [
            "--containall",
            "--cleanenv",
            "--bind",
            f"{incoming}:{INCOMING}:ro",
            "--bind",
            f"{outgoing}:{OUTGOING}:rw",
        ]
        if r.gpu_limit > 0:
            args.append("--nv")
        run = f"{runtime} exec \\\n" + _words(args)
        run += " \\\n  " + shlex.quote(apptainer_image(spec.image))
        run += " \\\n  " + " ".join(shlex.quote(a) for a in spec.command)
        check = (
            f"if ! command -v {runtime} >/dev/null 2>&1; then\n"
            f'  echo "pman: {runtime} is not installed on node $(hostname)" >&2\n'
            f'  record error "{runtime} is not installed on node $(hostname)"\n'
            "  exit 125\n"
            "fi"
        )
        return head + _fill(_CHILD, CHECK=check, ENV="\n".join(env_lines), RUN_ARGS=run)

    # none: the command itself, with the container paths rewritten to the real ones
    command = [to_host(a, incoming, outgoing) for a in spec.command]
    env = [to_host(e, incoming, outgoing) for e in spec.env]
    env += [f"PMAN_INCOMING={incoming}", f"PMAN_OUTGOING={outgoing}"]
    run = "cd " + shlex.quote(outgoing) + " || exit 1\n"
    run += "env " + " ".join(shlex.quote(e) for e in env) + " \\\n  "
    run += " ".join(shlex.quote(a) for a in command)
    return head + _fill(_CHILD, CHECK="", ENV="", RUN_ARGS=run)


def sbatch_options(spec: JobSpec, settings: Settings, job_dir: Path) -> list[str]:
    """sbatch's options for ``spec``: name, marker, log, resources, site options."""
    r = spec.resources
    opts = [
        f"--job-name={spec.name}",
        "--comment="
        + encode_comment(settings.instance, spec.fingerprint, spec.auid, r.number_of_workers),
        f"--output={job_dir / 'log'}",
        "--open-mode=append",
        f"--chdir={job_dir}",
        # pman's own environment (its secrets) never reaches a job
        "--export=NONE",
        # a job runs at most once: a requeue would run it over its own output
        "--no-requeue",
        f"--time={settings.timelimit_minutes}",
    ]
    if not settings.ignore_limits:
        opts.append(f"--cpus-per-task={max(1, math.ceil(r.cpu_limit / 1000))}")
        opts.append(f"--mem={r.memory_limit}M")
    if r.gpu_limit > 0:
        opts.append(f"--gres=gpu:{r.gpu_limit}")
    if r.number_of_workers > 1:
        opts.append(f"--array=1-{r.number_of_workers}")
    if settings.slurm_partition:
        opts.append(f"--partition={settings.slurm_partition}")
    if settings.slurm_account:
        opts.append(f"--account={settings.slurm_account}")
    if settings.slurm_qos:
        opts.append(f"--qos={settings.slurm_qos}")
    opts.extend(settings.slurm_extra_options)
    return opts


# ---------------------------------------------------------------- the backend
class SlurmBackend(Backend):
    name = "slurm"
    # a SLURM job name, a folder name and (with "-<job id>" added) a Docker
    # container name: letters, digits, '_', '.', '-', starting with a letter or digit
    name_pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
    name_rule = (
        "1 to 100 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )

    def __init__(self, client: SlurmClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        assert settings.slurm_job_dir is not None
        self.jobs_dir = settings.slurm_job_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> SlurmBackend:
        client = SlurmClient(
            bin_dir=settings.slurm_bin_dir,
            timeout=settings.engine_timeout,
            conf=settings.slurm_conf,
        )
        return cls(client, settings)

    def describe(self) -> str:
        where = f" (SLURM_CONF={self.settings.slurm_conf})" if self.settings.slurm_conf else ""
        return f"SLURM cluster{where}"

    # ---------------------------------------------------------------- errors
    def _raise(self, e: Exception, doing: str, spec: JobSpec | None = None) -> NoReturn:
        """The ONE place where failures of SLURM's commands become pman errors;
        with ``spec``, sbatch's complaints about the request are 400s."""
        if isinstance(e, PmanError):
            raise e
        where = self.describe()
        if isinstance(e, OSError):
            raise BackendError(f"{where}: {doing} failed: {e}") from e
        if not isinstance(e, SlurmCommandError):
            raise BackendError(f"{where}: {doing} failed: {e}") from e
        text = (e.stderr or e.stdout).strip()
        low = text.lower()
        if e.timed_out:
            raise BackendUnavailable(
                f"{where} did not answer within {self.settings.engine_timeout:g} s while "
                f"{doing} (`{' '.join(e.argv)}`)"
            ) from e
        if e.returncode is None:
            raise BackendUnavailable(
                f"cannot run SLURM's commands while {doing}: {text} "
                "(install SLURM's client tools or set SLURM_BIN_DIR)"
            ) from e
        if any(words in low for words in _UNREACHABLE):
            raise BackendUnavailable(
                f"{where}: slurmctld is unreachable while {doing}: {text}"
            ) from e
        if spec is not None:
            self._raise_for_request(e, low, text, spec)
        for setting, words in (
            ("SLURM_PARTITION", "partition"),
            ("SLURM_ACCOUNT", "account"),
            ("SLURM_QOS", "qos"),
            ("TIMELIMIT_MINUTES", "time limit"),
        ):
            if words in low and "invalid" in low:
                raise BackendError(
                    f"{where} refused {doing}: {text} (check {setting})", detail=text
                ) from e
        raise BackendError(f"{where} failed {doing}: {e}", detail=text) from e

    def _raise_for_request(self, e: SlurmCommandError, low: str, text: str, spec: JobSpec) -> None:
        r = spec.resources
        if "array" in low and "invalid" in low:
            raise UnsupportedOption(
                f"number_of_workers={r.number_of_workers} is refused by SLURM: {text}",
                fields={"number_of_workers": "too many for the cluster's job arrays"},
            ) from e
        if any(words in low for words in _RESOURCE_ERRORS) or "policy" in low:
            fields = self._fields_too_big(spec)
            names = ", ".join(f"{f}={getattr(r, f)}" for f in fields)
            raise UnsupportedOption(
                f"the SLURM cluster cannot run this job ({names}): {text}",
                fields={f: "more than a node of the partition has" for f in fields},
            ) from e

    def _fields_too_big(self, spec: JobSpec) -> list[str]:
        """The resource fields of ``spec`` no node of the partition can give; all
        of the requested ones when SLURM cannot say (the nodes could not be listed)."""
        r = spec.resources
        asked = ["cpu_limit", "memory_limit"] + (["gpu_limit"] if r.gpu_limit else [])
        try:
            nodes = self.client.node_limits(self.settings.slurm_partition)
        except SlurmCommandError:
            return asked
        if not nodes:
            return asked
        cpus = math.ceil(r.cpu_limit / 1000)
        too_big = []
        if all(cpus > n_cpus for n_cpus, _, _ in nodes):
            too_big.append("cpu_limit")
        if all(r.memory_limit > mem for _, mem, _ in nodes):
            too_big.append("memory_limit")
        if r.gpu_limit and all(_gpus(gres) < r.gpu_limit for _, _, gres in nodes):
            too_big.append("gpu_limit")
        return too_big or asked

    # ---------------------------------------------------------------- files
    def _dir(self, name: str) -> Path:
        if not self.name_pattern.fullmatch(name):  # never a path out of jobs_dir
            raise JobNotFound(f"no SLURM job named {name!r}")
        return self.jobs_dir / name

    def _meta(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / "meta.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise JobNotFound(f"no job named {name!r} on the {self.describe()}") from None
        except (OSError, ValueError) as e:
            raise BackendError(f"the job record {path} is unreadable: {e}") from e

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)

    def _worker_files(self, name: str) -> dict[int, WorkerFiles]:
        jobdir = self._dir(name)
        found: dict[int, dict[str, Any]] = {}
        try:
            entries = os.listdir(jobdir)
        except FileNotFoundError:
            return {}
        for entry in entries:
            kind, dot, index = entry.partition(".")
            if not dot or not index.isdigit() or kind not in ("exit", "oom", "error"):
                continue
            try:
                text = (jobdir / entry).read_text().strip()
            except OSError:
                continue
            slot = found.setdefault(int(index), {})
            if kind == "exit":
                slot["exit_code"] = int(text) if text.lstrip("-").isdigit() else None
            elif kind == "oom":
                slot["oom"] = True
            else:
                slot["error"] = text or "the job could not start"
        return {i: WorkerFiles(**v) for i, v in found.items()}

    # ---------------------------------------------------------------- submit
    def _check(self, spec: JobSpec) -> None:
        runtime = self.settings.slurm_container_runtime
        if runtime in ("apptainer", "singularity", "none") and (
            spec.uid is not None or spec.gid is not None
        ):
            raise UnsupportedOption(
                f"CONTAINER_USER needs SLURM_CONTAINER_RUNTIME docker or podman, not {runtime}"
            )

    def submit(self, spec: JobSpec) -> JobInfo:
        self._check(spec)
        jobdir = self._dir(spec.name)
        script = build_script(spec, self.settings, jobdir)
        options = sbatch_options(spec, self.settings, jobdir)
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create SLURM_JOB_DIR {self.jobs_dir}: {e}") from e
        self._claim(spec, jobdir)
        now = datetime.now(UTC)
        meta: dict[str, Any] = {
            "name": spec.name,
            "slurm_id": None,
            "image": spec.image,
            "command": spec.command,
            "fingerprint": spec.fingerprint,
            "labels": spec.labels,
            "workers": spec.resources.number_of_workers,
            "memory_limit": spec.resources.memory_limit,
            "timelimit": self.settings.timelimit_minutes,
            "runtime": self.settings.slurm_container_runtime,
            "created_at": now.isoformat(),
        }
        try:
            (jobdir / "job.sh").write_text(script)
            (jobdir / "job.sh").chmod(0o755)
            (jobdir / "log").touch()
            self._write_json(jobdir / "meta.json", meta)
            slurm_id = self.client.sbatch(options, jobdir / "job.sh")
        except Exception as e:
            shutil.rmtree(jobdir, ignore_errors=True)
            self._raise(e, f"submitting job {spec.name!r} with sbatch", spec)
        meta["slurm_id"] = slurm_id
        try:
            self._write_json(jobdir / "meta.json", meta)
        except OSError as e:
            # SLURM has the job but pman could not note its id: cancel it
            try:
                self.client.scancel(slurm_id)
            except SlurmCommandError:
                log.exception("could not cancel SLURM job %s after a failed submit", slurm_id)
            shutil.rmtree(jobdir, ignore_errors=True)
            raise BackendError(f"cannot write the job record in {jobdir}: {e}") from e
        return JobInfo(
            name=spec.name,
            state=JobState.QUEUED,
            image=spec.image,
            command=spec.command,
            message=f"submitted to SLURM as job {slurm_id}",
            created_at=now,
            fingerprint=spec.fingerprint,
            native_id=slurm_id,
            labels=spec.labels,
        )

    def _claim(self, spec: JobSpec, jobdir: Path) -> None:
        """Make the job's folder; JobExists when a submitted job has it."""
        try:
            jobdir.mkdir()
            return
        except FileExistsError:
            pass
        except OSError as e:
            raise BackendError(f"cannot create the job folder {jobdir}: {e}") from e
        try:
            meta = self._meta(spec.name)
        except (JobNotFound, BackendError):
            meta = {}
        if meta.get("slurm_id"):
            raise JobExists(
                f"a SLURM job named {spec.name!r} exists already",
                existing=self._info_or_none(spec.name),
            )
        # left by a submission that never reached SLURM (pman stopped in between)
        shutil.rmtree(jobdir, ignore_errors=True)
        try:
            jobdir.mkdir()
        except OSError as e:
            raise JobExists(f"job folder {jobdir} is in use: {e}") from e

    def _info_or_none(self, name: str) -> JobInfo | None:
        try:
            return self.get(name)
        except JobNotFound:
            return None

    # ---------------------------------------------------------------- state
    def _squeue(self, all_states: bool, job_id: str | None = None) -> list[QueueRow]:
        try:
            return self.client.squeue(all_states=all_states, job_id=job_id)
        except Exception as e:
            self._raise(e, "listing jobs with squeue")

    def get(self, name: str) -> JobInfo:
        meta = self._meta(name)
        workers = int(meta.get("workers") or 1)
        memory = int(meta.get("memory_limit") or 0)
        timelimit = int(meta.get("timelimit") or self.settings.timelimit_minutes)
        slurm_id = meta.get("slurm_id")
        created = parse_slurm_time(str(meta.get("created_at") or ""))
        base = JobInfo(
            name=name,
            state=JobState.QUEUED,
            image=str(meta.get("image", "")),
            command=list(meta.get("command") or []),
            created_at=created,
            fingerprint=meta.get("fingerprint"),
            native_id=slurm_id,
            labels=dict(meta.get("labels") or {}),
        )
        if not slurm_id:
            return _with(base, Outcome(JobState.QUEUED, message="submitting"))
        rows = [r for r in self._squeue(True, str(slurm_id)) if r.array_job_id == str(slurm_id)]
        files = self._worker_files(name)
        if not rows:
            return _with(base, state_from_files(files, workers, memory))
        outcome = job_state(rows, workers, memory, timelimit, files)
        started = _earliest(parse_slurm_time(r.start_time) for r in rows)
        finished = (
            _latest(parse_slurm_time(r.end_time) for r in rows) if outcome.state.finished else None
        )
        return _with(base, outcome, started, finished)

    def _infos(self, rows: list[QueueRow], check_files: bool) -> list[JobInfo]:
        """pman's jobs among squeue's rows, one per job name (its latest
        submission); with ``check_files``, only those whose folder names that
        submission (a deleted job stays in squeue until MinJobAge)."""
        groups: dict[str, list[QueueRow]] = {}
        marks: dict[str, dict[str, str]] = {}
        for row in rows:
            fields = parse_comment(row.comment)
            if fields is None:
                continue
            groups.setdefault(row.array_job_id, []).append(row)
            marks[row.array_job_id] = fields
        latest: dict[str, str] = {}
        for job_id, group in groups.items():
            name = group[0].name
            if name not in latest or int(job_id) > int(latest[name]):
                latest[name] = job_id
        infos = []
        for name, job_id in latest.items():
            if check_files:
                try:
                    if str(self._meta(name).get("slurm_id")) != job_id:
                        continue
                except (JobNotFound, BackendError):
                    continue
            fields = marks[job_id]
            group = groups[job_id]
            workers = int(fields.get("workers") or 1)
            outcome = job_state(group, workers, 0, self.settings.timelimit_minutes)
            labels = {
                LABEL_MANAGED: "true",
                LABEL_INSTANCE: fields.get("instance", ""),
                LABEL_FINGERPRINT: fields.get("fingerprint", ""),
                LABEL_AUID: fields.get("auid", ""),
            }
            infos.append(
                JobInfo(
                    name=name,
                    state=outcome.state,
                    exit_code=outcome.exit_code,
                    reason=outcome.reason,
                    message=outcome.message,
                    created_at=_earliest(parse_slurm_time(r.submit_time) for r in group),
                    started_at=_earliest(parse_slurm_time(r.start_time) for r in group),
                    fingerprint=fields.get("fingerprint") or None,
                    native_id=job_id,
                    labels=labels,
                )
            )
        return infos

    def list(self) -> list[JobInfo]:
        """Every pman job SLURM still knows, in one squeue call (finished ones
        for MinJobAge), reading the job folder of each to skip deleted ones."""
        return self._infos(self._squeue(True), check_files=True)

    def list_active(self) -> list[JobInfo]:
        """pman's unfinished jobs, in one squeue call whatever their number."""
        return self._infos(self._squeue(False), check_files=False)

    def logs(self, name: str, tail: int) -> str:
        self._meta(name)
        try:
            return tail_lines(self._dir(name) / "log", tail)
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
        self._meta(name)
        # a followed job is asked about (one squeue) once a second at most
        return self._file_logs(name, self._dir(name) / "log", tail, since, follow, poll=1.0)

    def cancel(self, name: str) -> None:
        """scancel, keeping the job folder (log, status files); the script's
        signal handler stops a docker/podman container itself."""
        self._scancel(name, self._meta(name))

    def _scancel(self, name: str, meta: dict[str, Any]) -> None:
        slurm_id = meta.get("slurm_id")
        if slurm_id:
            try:
                self.client.scancel(str(slurm_id))
            except SlurmCommandError as e:
                low = (e.stderr or "").lower()
                # finished already, or forgotten by SLURM: nothing to stop
                if not ("already completing or completed" in low or "invalid job id" in low):
                    self._raise(e, f"cancelling job {name!r} (SLURM job {slurm_id})")
            except Exception as e:
                self._raise(e, f"cancelling job {name!r} (SLURM job {slurm_id})")

    def delete(self, name: str) -> None:
        try:
            meta = self._meta(name)
        except JobNotFound:
            return
        self._scancel(name, meta)
        # the script's signal handler removes a running container by itself;
        # its log and status files may go now (it holds them open, if anything)
        try:
            shutil.rmtree(self._dir(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise BackendError(f"cannot remove the job folder of {name!r}: {e}") from e

    def ping(self) -> None:
        try:
            out = self.client.ping()
        except Exception as e:
            self._raise(e, "answering a ping (scontrol ping)")
        if "UP" not in out:
            raise BackendUnavailable(f"{self.describe()}: slurmctld is not up: {out.strip()}")


def _gpus(gres: str) -> int:
    """GPUs in a node's generic resources, e.g. ``gpu:2,gpu:a100:4(S:0-1)``."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def _earliest(times: Any) -> datetime | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _latest(times: Any) -> datetime | None:
    found = [t for t in times if t is not None]
    return max(found) if found else None


def _with(
    base: JobInfo,
    outcome: Outcome,
    started: datetime | None = None,
    finished: datetime | None = None,
) -> JobInfo:
    from dataclasses import replace

    return replace(
        base,
        state=outcome.state,
        reason=outcome.reason,
        message=outcome.message,
        exit_code=outcome.exit_code if outcome.state.finished else None,
        started_at=started,
        finished_at=finished,
    )
