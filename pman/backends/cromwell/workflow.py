"""The workflow every job is: one WDL document, :data:`WORKFLOW_WDL` (the
template file ``job.wdl`` of this package), and the inputs, labels and options
that make it one job. Pure: no server, no settings.

The document has no placeholders: what varies (image, command, resources,
folders) travels in the workflow inputs, so nothing a client sends is ever
parsed as WDL. It scatters the job's command over ``workers`` shards: shard i
is worker i (``PMAN_WORKER_INDEX`` = 0..N-1, as Cromwell numbers shards).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable
from importlib import resources
from typing import Any

from pman.models import JobSpec

#: the workflow and task pman submits; calls are named "<workflow>.<task>"
WORKFLOW_NAME = "pman"
TASK_NAME = "plugin"
CALL_NAME = f"{WORKFLOW_NAME}.{TASK_NAME}"

#: The one WDL document of every job. Cromwell and miniwdl both take WDL 1.0.
#: The command arrives as one shell script (``script``, built by pman with
#: every word quoted); ``argv`` is the same command as a list, kept only so
#: that the workflow's metadata tells pman what it runs.
WORKFLOW_WDL = (
    resources.files("pman.backends.cromwell").joinpath("job.wdl").read_text(encoding="utf-8")
)

#: Workflow options: a plugin's result is its output folder, which Cromwell's
#: call cache knows nothing of: a cached "success" would leave it empty.
WORKFLOW_OPTIONS: dict[str, Any] = {
    "read_from_cache": False,
    "write_to_cache": False,
    # a failed worker stops no other: each has written part of the output
    "workflow_failure_mode": "ContinueWhilePossible",
}

#: request fields behind each workflow input, to name them in errors
INPUT_FIELDS = {
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
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def cromwell_cpu(millicores: int) -> int:
    """Cromwell's ``cpu`` is a whole number of cores: millicores rounded up."""
    return max(1, math.ceil(millicores / 1000))


def cromwell_memory(mebibytes: int) -> str:
    """Cromwell's ``memory``: a size with its unit (MiB: exactly what was asked)."""
    return f"{mebibytes} MiB"


def unsettable_env(env: Iterable[str]) -> list[str]:
    """The names of ``env`` (``NAME=value`` entries) the script cannot set:
    not shell variable names."""
    names = [entry.partition("=")[0] for entry in env]
    return [name for name in names if not _SHELL_NAME.fullmatch(name)]


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


def submit_form(
    spec: JobSpec, storebase: str, minutes: int
) -> dict[str, tuple[str | None, str, str]]:
    """The multipart form of ``POST /api/workflows/v1`` for ``spec``: its
    folders are the host paths of its mounts (under ``storebase`` when the
    mounts give none), ``minutes`` its time limit."""
    m = spec.mounts
    host_input = str(m.input_host) if m.input_host else f"{storebase}/{m.input_dir}".rstrip("/")
    host_output = str(m.output_host) if m.output_host else f"{storebase}/{m.output_dir}"
    inputs = workflow_inputs(spec, host_input, host_output, minutes)
    return {
        "workflowSource": ("pman.wdl", WORKFLOW_WDL, "text/plain"),
        "workflowInputs": ("inputs.json", json.dumps(inputs), "application/json"),
        "labels": ("labels.json", json.dumps(spec.labels), "application/json"),
        "workflowOptions": ("options.json", json.dumps(WORKFLOW_OPTIONS), "application/json"),
        "workflowType": (None, "WDL", "text/plain"),
        "workflowTypeVersion": (None, "1.0", "text/plain"),
    }
