"""Jobs as WDL workflows on a Cromwell server (upstream pman's road to SLURM).

Every job is one workflow of the same WDL document, :data:`WORKFLOW_WDL`;
what varies (image, command, resources, folders) travels in the workflow
inputs, so nothing a client sends is ever parsed as WDL. The document
scatters the job's command over ``number_of_workers`` shards: shard i is
worker i (``PMAN_WORKER_INDEX`` = 0..N-1, as Cromwell numbers shards).

Cromwell names workflows by UUID: pman's jid travels as a Cromwell label
(:data:`pman.jobs.LABEL_JID`) with pman's other labels, and a job is found
with ``/query`` by label. Cromwell cannot delete a workflow: DELETE aborts it
and turns its ``org.chrisproject.pman`` label to ``deleted``, so that pman's
queries (which ask for ``org.chrisproject.pman:true``) no longer see it and a
new job may take the same jid.

Mounts: the task's runtime section carries the host folders as the custom
runtime attributes ``pman_incoming`` and ``pman_outgoing``; the site's
Cromwell backend configuration binds them at /share/incoming (read-only) and
/share/outgoing, as upstream's ``sharedir`` did (README: "Cromwell").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import requests

from pman.backends.base import Backend, Outcome
from pman.backends.kit.files import LOG_CHUNK, tail_offset
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.labels import LABEL_AUID, LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_JID, LABEL_MANAGED
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: Cromwell workflow status -> JobState.
#: https://cromwell.readthedocs.io/en/stable/api/RESTAPI/#workflowqueryparameter
#: ("On Hold": a workflow submitted with workflowOnHold=true, until released)
#: A workflow that is "Aborting" still has tasks that may write to the output
#: folder: it counts as running until Cromwell says "Aborted". "Failed" is
#: refined from its calls (see ``job_outcome``): the command's own failure or
#: a job that could not run.
WORKFLOW_STATES: dict[str, JobState] = {
    "On Hold": JobState.QUEUED,
    "Submitted": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Aborting": JobState.RUNNING,
    "Aborted": JobState.CANCELLED,
    "Succeeded": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
}

#: a call's ``executionStatus`` -> JobState of that one worker.
#: https://cromwell.readthedocs.io/en/stable/api/RESTAPI/#callmetadata
#: (Cromwell's ExecutionStatus enumeration). "Failed" without a returnCode is
#: a job that never ran its command (image missing, rejected by the
#: scheduler): SYSTEM_ERROR, see ``job_outcome``.
CALL_STATES: dict[str, JobState] = {
    "NotStarted": JobState.QUEUED,
    "WaitingForQueueSpace": JobState.QUEUED,
    "QueuedInCromwell": JobState.QUEUED,
    "Starting": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Aborting": JobState.RUNNING,
    # pman's workflows ask for no retries; a retry would still be to come
    "RetryableFailure": JobState.RUNNING,
    "Done": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
    "Aborted": JobState.CANCELLED,
    # skipped by a conditional (pman's workflow has none) or never startable
    "Bypassed": JobState.CANCELLED,
    "Unstartable": JobState.SYSTEM_ERROR,
}

#: workflow statuses of a workflow that has not ended
ACTIVE_STATUSES = ("Submitted", "Running", "Aborting", "On Hold")

#: the workflow and task pman submits; calls are named "<workflow>.<task>"
WORKFLOW_NAME = "pman"
TASK_NAME = "plugin"
CALL_NAME = f"{WORKFLOW_NAME}.{TASK_NAME}"

#: The one WDL document of every job. Cromwell and miniwdl both take WDL 1.0.
#: The command arrives as one shell script (``script``, built by pman with
#: every word quoted); ``argv`` is the same command as a list, kept only so
#: that the workflow's metadata tells pman what it runs.
WORKFLOW_WDL = """\
version 1.0

# One pman job: the job's command in its image, once per worker.
# Written by pman (pman/backends/cromwell.py); every value is a workflow input.

workflow pman {
  input {
    String image
    Array[String] argv
    String script
    Int workers = 1
    Int cpu = 1
    String memory
    Int gpu_count = 0
    Int runtime_minutes
    String incoming
    String outgoing
  }

  scatter (worker in range(workers)) {
    call plugin {
      input:
        image = image,
        script = script,
        worker = worker,
        workers = workers,
        cpu = cpu,
        memory = memory,
        gpu_count = gpu_count,
        runtime_minutes = runtime_minutes,
        incoming = incoming,
        outgoing = outgoing
    }
  }
}

task plugin {
  input {
    String image
    String script
    Int worker
    Int workers
    Int cpu
    String memory
    Int gpu_count
    Int runtime_minutes
    String incoming
    String outgoing
  }

  command <<<
export PMAN_WORKER_INDEX=~{worker} PMAN_NUMBER_OF_WORKERS=~{workers}
~{script}
  >>>

  runtime {
    docker: image
    cpu: cpu
    memory: memory
    gpu: gpu_count > 0
    gpuCount: gpu_count
    runtime_minutes: runtime_minutes
    pman_incoming: incoming
    pman_outgoing: outgoing
    maxRetries: 0
  }
}
"""

#: Workflow options: a plugin's result is its output folder, which Cromwell's
#: call cache knows nothing of: a cached "success" would leave it empty.
WORKFLOW_OPTIONS: dict[str, Any] = {
    "read_from_cache": False,
    "write_to_cache": False,
    # a failed worker stops no other: each has written part of the output
    "workflow_failure_mode": "ContinueWhilePossible",
}

#: request fields behind each workflow input, to name them in errors
_INPUT_FIELDS = {
    "image": "image",
    "argv": "entrypoint",
    "script": "entrypoint",
    "workers": "number_of_workers",
    "cpu": "cpu_limit",
    "memory": "memory_limit",
    "gpu_count": "gpu_limit",
    "incoming": "input_dir",
    "outgoing": "output_dir",
}
#: request fields behind pman's labels
_LABEL_FIELDS = {LABEL_JID: "jid", LABEL_IMAGE: "image", LABEL_AUID: "auid"}
#: Cromwell's limit on label keys and values
#: https://cromwell.readthedocs.io/en/stable/cromwell_features/Labels/
LABEL_MAX = 255
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: at most this much of a log file is read to find its last lines
LOG_READ_LIMIT = 4 * 1024 * 1024
_CHUNK = 64 * 1024


def cromwell_cpu(millicores: int) -> int:
    """Cromwell's ``cpu`` is a whole number of cores: millicores rounded up."""
    return max(1, math.ceil(millicores / 1000))


def cromwell_memory(mebibytes: int) -> str:
    """Cromwell's ``memory``: a size with its unit (MiB: exactly what was asked)."""
    return f"{mebibytes} MiB"


def build_script(command: list[str], env: Iterable[str]) -> str:
    """The job's command as a POSIX shell script: its environment, then the
    command with every word quoted. stderr joins stdout, so the job's log is
    in the order it was written (the task's stderr file keeps what the
    scheduler and the container runtime say)."""
    lines = ["exec 2>&1"]
    for entry in env:
        key, _, value = entry.partition("=")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(shlex.join(command))
    return "\n".join(lines) + "\n"


def workflow_inputs(spec: JobSpec, host_input: str, host_output: str, minutes: int) -> dict:
    """The workflow inputs of ``spec``, keyed as Cromwell takes them ("pman.image")."""
    r = spec.resources
    values: dict[str, Any] = {
        "image": spec.image,
        "argv": list(spec.command),
        "script": build_script(spec.command, spec.env),
        "workers": r.number_of_workers,
        "cpu": cromwell_cpu(r.cpu_limit),
        "memory": cromwell_memory(r.memory_limit),
        "gpu_count": r.gpu_limit,
        "runtime_minutes": minutes,
        "incoming": host_input,
        "outgoing": host_output,
    }
    return {f"{WORKFLOW_NAME}.{k}": v for k, v in values.items()}


def parse_time(text: Any) -> datetime | None:
    """Cromwell's ISO 8601 times ("2024-05-01T10:00:00.123Z")."""
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def failure_messages(failures: Any) -> list[str]:
    """The innermost messages of Cromwell's nested ``failures`` (causes first)."""
    out: list[str] = []
    for failure in failures or []:
        if not isinstance(failure, dict):
            continue
        inner = failure_messages(failure.get("causedBy"))
        if inner:
            out.extend(m for m in inner if m not in out)
            continue
        text = str(failure.get("message") or failure.get("failure") or "").strip()
        if text and text not in out:
            out.append(text)
    return out


def _latest_attempts(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One call per shard: its latest attempt, by shard."""
    best: dict[int, dict[str, Any]] = {}
    for call in calls:
        shard = int(call.get("shardIndex", -1))
        if shard not in best or int(call.get("attempt", 1)) >= int(best[shard].get("attempt", 1)):
            best[shard] = call
    return [best[k] for k in sorted(best)]


def _time_limited(text: str) -> bool:
    return "time limit" in text.lower()


def job_outcome(metadata: dict[str, Any], memory_limit: int) -> Outcome:
    """The job's state from a workflow's metadata: the workflow's status, with
    an ended job's exit code and reason from its calls (one per worker)."""
    status = str(metadata.get("status", ""))
    state = WORKFLOW_STATES.get(status)
    if state is None:
        log.warning("unknown Cromwell workflow status %r of %s", status, metadata.get("id"))
        return Outcome(JobState.UNKNOWN, "unknown_status", f"Cromwell reports status {status!r}")
    calls = _latest_attempts((metadata.get("calls") or {}).get(CALL_NAME) or [])
    many = len(calls) > 1 or int((metadata.get("inputs") or {}).get("workers") or 1) > 1

    def who(call: dict[str, Any]) -> str:
        return f"worker {call.get('shardIndex')}: " if many else ""

    if state is JobState.QUEUED:
        return Outcome(state, message=f"Cromwell: {status}")
    if state is JobState.RUNNING:
        statuses = sorted({str(c.get("executionStatus")) for c in calls})
        detail = f" (tasks: {', '.join(statuses)})" if statuses else ""
        return Outcome(state, message=f"Cromwell: {status}{detail}")
    if state is JobState.CANCELLED:
        return Outcome(state, "aborted", "aborted in Cromwell")
    if state is JobState.SUCCEEDED:
        return Outcome(
            state,
            message="exited with code 0" if not many else f"all {len(calls)} workers exited with 0",
            exit_code=0,
        )
    # Failed: the first failed call decides; a workflow that failed before any
    # call (Cromwell could not read or materialise it) could never run
    workflow_text = "; ".join(failure_messages(metadata.get("failures")))
    for call in calls:
        call_state = CALL_STATES.get(str(call.get("executionStatus")), JobState.UNKNOWN)
        if call_state not in (JobState.FAILED, JobState.SYSTEM_ERROR):
            continue
        text = "; ".join(failure_messages(call.get("failures"))) or workflow_text
        code = call.get("returnCode")
        if isinstance(code, int) and not isinstance(code, bool):
            if code == 137 and memory_limit:
                return Outcome(
                    JobState.FAILED,
                    "killed",
                    f"{who(call)}killed by SIGKILL (exit code 137), most likely out of memory "
                    f"(memory_limit {memory_limit} MiB)",
                    code,
                )
            suffix = f": {text}" if text else ""
            return Outcome(
                JobState.FAILED, "exit_code", f"{who(call)}exited with code {code}{suffix}", code
            )
        if _time_limited(text):
            return Outcome(JobState.FAILED, "time_limit", f"{who(call)}{text}")
        return Outcome(JobState.SYSTEM_ERROR, "not_run", f"{who(call)}could not run: {text}")
    if _time_limited(workflow_text):
        return Outcome(JobState.FAILED, "time_limit", workflow_text)
    return Outcome(
        JobState.SYSTEM_ERROR,
        "workflow_failed",
        f"Cromwell failed the workflow: {workflow_text or 'no reason given'}",
    )


def _inputs_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """Workflow inputs without the workflow's name ("image", not "pman.image")."""
    inputs = metadata.get("inputs") or {}
    return {str(k).rpartition(".")[2]: v for k, v in inputs.items()}


def _memory_of(inputs: dict[str, Any]) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*MiB\s*", str(inputs.get("memory") or ""))
    return int(m.group(1)) if m else 0


def info_from_metadata(metadata: dict[str, Any]) -> JobInfo:
    """A workflow's metadata (``GET /api/workflows/v1/{id}/metadata``) as a JobInfo."""
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    inputs = _inputs_of(metadata)
    outcome = job_outcome({**metadata, "inputs": inputs}, _memory_of(inputs))
    command = inputs.get("argv")
    return JobInfo(
        name=labels.get(LABEL_JID, ""),
        state=outcome.state,
        image=labels.get(LABEL_IMAGE) or str(inputs.get("image") or ""),
        command=[str(c) for c in command] if isinstance(command, list) else [],
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        message=outcome.message,
        created_at=parse_time(metadata.get("submission")),
        started_at=parse_time(metadata.get("start")),
        finished_at=parse_time(metadata.get("end")) if outcome.state.finished else None,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=str(metadata.get("id") or "") or None,
        labels=labels,
    )


def info_from_query(result: dict[str, Any]) -> JobInfo:
    """One result of ``/query`` (with its labels) as a JobInfo: the workflow's
    status only; ``get`` reads the metadata for exit codes and reasons."""
    labels = {str(k): str(v) for k, v in (result.get("labels") or {}).items()}
    status = str(result.get("status", ""))
    state = WORKFLOW_STATES.get(status)
    if state is None:
        log.warning("unknown Cromwell workflow status %r of %s", status, result.get("id"))
        state = JobState.UNKNOWN
    return JobInfo(
        name=labels.get(LABEL_JID, ""),
        state=state,
        image=labels.get(LABEL_IMAGE, ""),
        message=f"Cromwell: {status}",
        created_at=parse_time(result.get("submission")),
        started_at=parse_time(result.get("start")),
        finished_at=parse_time(result.get("end")) if state.finished else None,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=str(result.get("id") or "") or None,
        labels=labels,
    )


def tail_lines(path: str, lines: int, limit: int = LOG_READ_LIMIT) -> list[str]:
    """The last ``lines`` lines of a file, reading backwards from its end in
    chunks and at most ``limit`` bytes: never the whole file into memory."""
    if lines <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        pos = end
        data = b""
        while pos > 0 and data.count(b"\n") <= lines and end - pos < limit:
            step = min(_CHUNK, pos, limit - (end - pos))
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode("utf-8", errors="replace").replace("\r", "")
    out = text.splitlines(keepends=True)
    if pos > 0 and out:
        out = out[1:]  # the first line read is only the end of a line
    return out[-lines:]


def _follow_files(
    sources: list[tuple[str, str]],
    tail: int | None,
    refresh: Callable[[], list[tuple[str, str]]] | None,
    ended: Callable[[], bool] | None,
    poll: float = 1.0,
) -> Iterator[bytes]:
    """Whole lines of several files in turn, each with its prefix, from the
    start of the last ``tail`` lines of them all; with ``refresh`` and
    ``ended``, again every ``poll`` seconds (files may appear or grow) until
    the writer has ended. A line is read in pieces of at most LOG_CHUNK bytes."""
    offsets: dict[str, int] = {}
    if tail is not None:
        want = tail
        for _, path in reversed(sources):
            start = tail_offset(Path(path), want) if want > 0 else _size(path)
            offsets[path] = start
            want -= _count_lines(path, start)
            want = max(want, 0)

    def drain(final: bool) -> Iterator[bytes]:
        for prefix, path in sources:
            if "://" in path:  # in a bucket, say: not on pman's filesystem
                if path not in offsets:
                    offsets[path] = 0
                    yield f"{prefix}pman cannot read the job's log at {path}\n".encode()
                continue
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue  # not written yet
            except OSError as e:
                if path not in offsets:
                    offsets[path] = 0
                    yield f"{prefix}pman cannot read {path}: {e.strerror}\n".encode()
                continue
            with f:
                f.seek(offsets.get(path, 0))
                while line := f.readline(LOG_CHUNK):
                    if not line.endswith(b"\n") and len(line) < LOG_CHUNK and not final:
                        break  # half a line: the rest comes at the next pass
                    offsets[path] = f.tell()
                    yield prefix.encode() + line
                    if not line.endswith(b"\n") and final:
                        yield b"\n"

    if refresh is None or ended is None:
        yield from drain(final=True)
        return
    while True:
        done = ended()
        yield from drain(final=done)
        if done:
            return
        time.sleep(poll)
        sources = refresh()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _count_lines(path: str, start: int) -> int:
    """Lines from ``start`` to the end (a last line without newline counts)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return 0
    count, last = 0, b"\n"
    with f:
        f.seek(start)
        while data := f.read(LOG_CHUNK):
            count += data.count(b"\n")
            last = data[-1:]
    return count + (last != b"\n")


def _query_params(criteria: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*criteria, ("additionalQueryResultFields", "labels")]


class CromwellBackend(Backend):
    name = "cromwell"
    engine = "Cromwell server"
    # the jid is a Cromwell label value (at most 255 characters) and a query
    # parameter "key:value": no ':' and nothing a URL or a shell would mangle
    name_pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
    name_rule = (
        "1 to 255 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        assert settings.cromwell_url
        self.settings = settings
        self.url = settings.cromwell_url.rstrip("/")
        self.timeout = settings.engine_timeout
        self.session = session or requests.Session()
        #: workflow id of each jid, learned from queries: then a job's status
        #: or logs take one call, not a query first (checked against the
        #: workflow's labels, as a deleted job's jid may be taken again)
        self._ids: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> CromwellBackend:
        problems: dict[str, str] = {}
        if not settings.cromwell_url:
            problems["CROMWELL_URL"] = "required when CONTAINER_ENV=cromwell"
        if settings.storage_type != "host":
            problems["STORAGE_TYPE"] = (
                "the cromwell backend needs host storage: STOREBASE at the same path on the "
                "Cromwell server's compute nodes"
            )
        if settings.container_user.uid or settings.container_user.gid:
            problems["CONTAINER_USER"] = (
                "not supported by the cromwell backend: the site's Cromwell configuration "
                "decides whom jobs run as"
            )
        if settings.shm_size is not None:
            problems["SHM_SIZE"] = "not supported by the cromwell backend"
        if settings.ignore_limits:
            problems["IGNORE_LIMITS"] = (
                "not supported by the cromwell backend: a job's cpu and memory are what "
                "Cromwell's scheduler allocates to it"
            )
        for key, value in settings.job_labels.items():
            if len(key) > LABEL_MAX or len(value) > LABEL_MAX:
                problems["JOB_LABELS"] = (
                    f"label {key!r}: Cromwell takes keys and values of at most "
                    f"{LABEL_MAX} characters"
                )
        if problems:
            lines = "\n".join(f"  {k}: {v}" for k, v in sorted(problems.items()))
            raise ConfigError(f"invalid configuration:\n{lines}", fields=problems)
        return cls(settings)

    def describe(self) -> str:
        return f"{self.engine} at {self.url}"

    def close(self) -> None:
        self.session.close()

    # ---------------------------------------------------------------- errors
    def _raise(self, e: Exception, doing: str) -> NoReturn:
        """The ONE place where HTTP and Cromwell errors become pman errors."""
        if isinstance(e, PmanError):
            raise e
        where = self.describe()
        if isinstance(e, requests.Timeout):
            raise BackendUnavailable(
                f"{where} did not answer within {self.timeout:g} s while {doing}"
            ) from e
        if isinstance(e, requests.ConnectionError):
            raise BackendUnavailable(f"{where} is unreachable while {doing}: {e}") from e
        if isinstance(e, requests.HTTPError) and e.response is not None:
            code = e.response.status_code
            text = _error_text(e.response)
            if code == 404:
                raise JobNotFound(f"{where} does not know it ({doing}): {text}") from e
            if code == 400:
                raise InvalidJobSpec(
                    f"{where} refused {doing}: {text}", fields=_fields_named(text)
                ) from e
            if code == 503:
                raise BackendUnavailable(f"{where} is unavailable while {doing}: {text}") from e
            raise BackendError(f"{where} failed {doing}: HTTP {code}: {text}", detail=text) from e
        if isinstance(e, ValueError | KeyError | TypeError):
            # a body that is not the JSON Cromwell documents
            raise BackendError(f"{where} answered {doing} with something unexpected: {e}") from e
        raise BackendError(f"{where} failed {doing}: {e}") from e

    def _call(self, method: str, path: str, doing: str, **kwargs: Any) -> Any:
        """One request to Cromwell; its JSON body. Raises pman's errors only."""
        try:
            resp = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
            resp.raise_for_status()
            return resp.json() if resp.content else {}
        except Exception as e:
            self._raise(e, doing)

    # ---------------------------------------------------------------- submit
    def check_spec(self, spec: JobSpec) -> None:
        """What Cromwell would take but pman cannot pass on faithfully."""
        bad_env = [
            e.partition("=")[0] for e in spec.env if not _SHELL_NAME.fullmatch(e.partition("=")[0])
        ]
        if bad_env:
            raise UnsupportedOption(
                f"the cromwell backend sets the environment with the shell: "
                f"{', '.join(map(repr, bad_env))} cannot be shell variable names",
                fields={"env": "names must be letters, digits and '_', not starting with a digit"},
            )

    def submit_form(self, spec: JobSpec) -> dict[str, tuple[str | None, str, str]]:
        """The multipart form of ``POST /api/workflows/v1`` for ``spec``."""
        m = spec.mounts
        base = str(self.settings.storebase or "").rstrip("/")
        host_input = str(m.input_host) if m.input_host else f"{base}/{m.input_dir}".rstrip("/")
        host_output = str(m.output_host) if m.output_host else f"{base}/{m.output_dir}"
        inputs = workflow_inputs(spec, host_input, host_output, self.settings.timelimit_minutes)
        return {
            "workflowSource": ("pman.wdl", WORKFLOW_WDL, "text/plain"),
            "workflowInputs": ("inputs.json", json.dumps(inputs), "application/json"),
            "labels": ("labels.json", json.dumps(spec.labels), "application/json"),
            "workflowOptions": ("options.json", json.dumps(WORKFLOW_OPTIONS), "application/json"),
            "workflowType": (None, "WDL", "text/plain"),
            "workflowTypeVersion": (None, "1.0", "text/plain"),
        }

    def submit(self, spec: JobSpec) -> JobInfo:
        # Cromwell would accept a second workflow with the same label: a jid
        # on Cromwell already is pman's own job from before a lost registry,
        # or a name clash (the service compares fingerprints)
        self.check_spec(spec)
        existing = self._find(spec.name)
        if existing is not None:
            info = info_from_query(existing)
            raise JobExists(f"a Cromwell workflow has the jid {spec.name!r}", existing=info)
        answer = self._call(
            "POST",
            "/api/workflows/v1",
            f"submitting job {spec.name!r}",
            files=self.submit_form(spec),
        )
        try:
            workflow_id = str(answer["id"])
            status = str(answer.get("status", "Submitted"))
        except Exception as e:
            self._raise(e, f"submitting job {spec.name!r}")
        return JobInfo(
            name=spec.name,
            state=WORKFLOW_STATES.get(status, JobState.QUEUED),
            image=spec.image,
            command=spec.command,
            message=f"submitted to Cromwell as workflow {workflow_id}",
            created_at=datetime.now(UTC),
            fingerprint=spec.fingerprint,
            native_id=workflow_id,
            labels=spec.labels,
        )

    # ---------------------------------------------------------------- state
    def _query(self, criteria: Iterable[tuple[str, str]], doing: str) -> list[dict[str, Any]]:
        answer = self._call("GET", "/api/workflows/v1/query", doing, params=_query_params(criteria))
        try:
            results = list(answer["results"])
        except Exception as e:
            self._raise(e, doing)
        results = [r for r in results if isinstance(r, dict)]
        for r in sorted(results, key=lambda r: str(r.get("submission") or "")):
            jid = (r.get("labels") or {}).get(LABEL_JID)
            if jid and r.get("id"):
                self._ids[str(jid)] = str(r["id"])
        return results

    def _find(self, name: str) -> dict[str, Any] | None:
        """The newest live (not deleted) workflow of job ``name``, from one query."""
        results = self._query(
            [("label", f"{LABEL_MANAGED}:true"), ("label", f"{LABEL_JID}:{name}")],
            f"looking for job {name!r}",
        )
        # the label filter matches a value exactly; insist anyway
        results = [r for r in results if (r.get("labels") or {}).get(LABEL_JID, name) == name]
        if not results:
            return None
        if len(results) > 1:
            log.warning("%d Cromwell workflows carry jid %r: using the newest", len(results), name)
        return max(results, key=lambda r: str(r.get("submission") or ""))

    def _found(self, name: str) -> dict[str, Any]:
        found = self._find(name)
        if found is None:
            raise JobNotFound(f"no job named {name!r} on the {self.describe()}")
        return found

    def _metadata(self, workflow_id: str, name: str) -> dict[str, Any]:
        return self._call(
            "GET",
            f"/api/workflows/v1/{workflow_id}/metadata",
            f"reading the metadata of job {name!r}",
            params=[("expandSubWorkflows", "false"), ("excludeKey", "submittedFiles")],
        )

    def get(self, name: str) -> JobInfo:
        metadata = None
        known = self._ids.get(name)
        if known is not None:
            with contextlib.suppress(JobNotFound):
                metadata = self._metadata(known, name)
            labels = (metadata or {}).get("labels") or {}
            if labels.get(LABEL_MANAGED) != "true" or labels.get(LABEL_JID) != name:
                metadata = None
                self._ids.pop(name, None)
        if metadata is None:
            metadata = self._metadata(self._found(name)["id"], name)
        try:
            return info_from_metadata(metadata)
        except Exception as e:
            self._raise(e, f"reading the metadata of job {name!r}")

    def _log_sources(self, name: str) -> list[tuple[str, str]]:
        """(prefix, path) of every stdout and stderr file of the job's tasks, in
        the order ``logs`` gives them; a path pman cannot read is ("", message)."""
        workflow_id = self._ids.get(name) or self._found(name)["id"]
        answer = self._call(
            "GET", f"/api/workflows/v1/{workflow_id}/logs", f"reading the logs of job {name!r}"
        )
        calls = _latest_attempts((answer.get("calls") or {}).get(CALL_NAME) or [])
        many = len(calls) > 1
        sources = []
        for call in calls:
            prefix = f"[worker {call.get('shardIndex')}] " if many else ""
            for key in ("stdout", "stderr"):
                path = call.get(key)
                if path:
                    sources.append((prefix, str(path)))
        return sources

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The tasks' stdout and stderr files, in chunks of whole lines (each
        worker's prefixed as in ``logs``). Following, every file is read again
        once a second, the workflow is asked whether it has ended, and only
        whole lines are sent so that files never interleave mid-line."""
        if since is not None:
            raise UnsupportedOption(
                "the cromwell backend cannot filter logs by time: the tasks' stdout "
                "and stderr files have no timestamps",
                fields={"since": "not supported by the cromwell backend"},
            )
        sources = self._log_sources(name)

        def ended() -> bool:
            try:
                return self.get(name).state.finished
            except JobNotFound:
                return True

        return _follow_files(
            sources,
            tail,
            (lambda: self._log_sources(name)) if follow else None,
            ended if follow else None,
        )

    def cancel(self, name: str) -> None:
        """Abort the workflow (Cromwell stops its task and keeps the workflow,
        its metadata and its files); one that has ended is left alone."""
        found = self._found(name)
        if found.get("status") not in ACTIVE_STATUSES:
            return
        try:
            self._call("POST", f"/api/workflows/v1/{found['id']}/abort", f"aborting job {name!r}")
        except BackendError as e:
            if _status(e) != 403:  # 403: it ended meanwhile, nothing to abort
                raise

    def logs(self, name: str, tail: int) -> str:
        workflow_id = self._ids.get(name) or self._found(name)["id"]
        answer = self._call(
            "GET", f"/api/workflows/v1/{workflow_id}/logs", f"reading the logs of job {name!r}"
        )
        calls = _latest_attempts((answer.get("calls") or {}).get(CALL_NAME) or [])
        many = len(calls) > 1
        out: list[str] = []
        for call in calls:
            prefix = f"[worker {call.get('shardIndex')}] " if many else ""
            for key in ("stdout", "stderr"):
                path = call.get(key)
                if not path:
                    continue
                if "://" in str(path):  # in a bucket, say: not on pman's filesystem
                    out.append(f"{prefix}pman cannot read the job's {key} at {path}\n")
                    continue
                try:
                    lines = tail_lines(str(path), tail)
                except FileNotFoundError:
                    continue  # not written yet
                except OSError as e:
                    lines = [f"pman cannot read the job's {key} at {path}: {e.strerror}\n"]
                out.extend(prefix + line for line in lines)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        return "".join(out[-tail:]) if tail > 0 else ""

    def delete(self, name: str) -> None:
        """Abort the workflow if it runs, then unlabel it as pman's (Cromwell
        keeps every workflow): deleting twice, or a finished job, is no error."""
        found = self._find(name)
        self._ids.pop(name, None)
        if found is None:
            return
        workflow_id = found["id"]
        if found.get("status") in ACTIVE_STATUSES:
            try:
                self._call(
                    "POST", f"/api/workflows/v1/{workflow_id}/abort", f"aborting job {name!r}"
                )
            except JobNotFound:
                return
            except BackendError as e:
                if _status(e) != 403:  # 403: it ended meanwhile, nothing to abort
                    raise
        self._call(
            "PATCH",
            f"/api/workflows/v1/{workflow_id}/labels",
            f"marking job {name!r} deleted",
            json={LABEL_MANAGED: "deleted"},
        )

    def list(self) -> list[JobInfo]:
        """Every job pman created (not deleted) in ONE query."""
        results = self._query([("label", f"{LABEL_MANAGED}:true")], "listing pman's workflows")
        return [info_from_query(r) for r in results]

    def list_active(self) -> list[JobInfo]:
        """Unfinished jobs in ONE query: Cromwell filters by status itself."""
        criteria = [("label", f"{LABEL_MANAGED}:true")]
        criteria += [("status", s) for s in ACTIVE_STATUSES]
        results = self._query(criteria, "listing pman's unfinished workflows")
        return [info_from_query(r) for r in results]

    def ping(self) -> None:
        self._call("GET", "/engine/v1/version", "answering a ping")


def _status(e: BackendError) -> int | None:
    cause = e.__cause__
    if isinstance(cause, requests.HTTPError) and cause.response is not None:
        return cause.response.status_code
    return None


def _error_text(resp: requests.Response) -> str:
    """Cromwell's error body ``{"status": "fail", "message": ..., "errors": [...]}``."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason
    if not isinstance(body, dict):
        return str(body)[:500]
    message = str(body.get("message") or resp.reason)
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        message += ": " + "; ".join(str(x) for x in errors)
    return message


def _fields_named(text: str) -> dict[str, str]:
    """The request fields a Cromwell 400 names: a workflow input or a label."""
    fields: dict[str, str] = {}
    for name, field in _INPUT_FIELDS.items():
        if re.search(rf"\b{WORKFLOW_NAME}\.{name}\b", text):
            fields[field] = text
    for label, field in _LABEL_FIELDS.items():
        if label in text:
            fields[field] = text
    return fields
