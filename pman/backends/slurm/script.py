"""The job's batch script and sbatch options, pure functions of the job and
the backend's configuration.

The script is the template ``batch.sh.tmpl`` in this package; this module
works out its values (the folders, the runtime's options, the command) and
refuses a job the script cannot express (:func:`refusal`). Every value
reaches the script through a quoting filter: a value the template prints
without one fails the rendering instead of reaching a shell unquoted.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from pman.backends.kit.paths import rewrite_text
from pman.backends.slurm.comment import encode_comment
from pman.backends.slurm.config import RUNTIMES_WITH_ENGINE, SlurmConfig
from pman.backends.slurm.settings import RUNTIMES_AS_SUBMITTER
from pman.errors import InvalidJobSpec, PmanError, UnsupportedOption
from pman.models import INCOMING, OUTGOING, JobSpec

TEMPLATE = "batch.sh.tmpl"
#: the environment the batch script starts with (sbatch --export=NONE: pman's
#: own environment, with its secrets, never reaches a job)
SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: what the template's ``name`` filter lets through as it is
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


# ---------------------------------------------------------------- the template
class Shell(str):
    """Text made safe for its place in the script by one of the filters."""


def _q(value: Any) -> Shell:
    return Shell(shlex.quote(str(value)))


def _words(values: Iterable[Any]) -> Shell:
    return Shell(" ".join(shlex.quote(str(v)) for v in values))


def _name(value: Any) -> Shell:
    text = str(value)
    if not _PLAIN.fullmatch(text):
        raise ValueError(f"{text!r} is not a plain name for the batch script")
    return Shell(text)


def _comment(value: Any) -> Shell:
    return Shell(str(value).replace("\r", "\\r").replace("\n", "\\n"))


def _only_filtered(value: Any) -> Any:
    if isinstance(value, Shell | int):
        return value
    raise TypeError(f"the batch script template prints {value!r} without a quoting filter")


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        finalize=_only_filtered,
    )
    env.filters.update(q=_q, words=_words, name=_name, comment=_comment)
    return env.from_string(resources.files(__package__).joinpath(TEMPLATE).read_text())


# ---------------------------------------------------------------- values
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


def apptainer_image(image: str) -> str:
    """An OCI reference for apptainer: a plain image name is a docker:// one;
    a path to a .sif file or a URI with a scheme is taken as it is."""
    if "://" in image or image.startswith("/") or image.endswith(".sif"):
        return image
    return f"docker://{image}"


def option_lines(words: list[str]) -> list[list[str]]:
    """Options one per line, each with the values after it, for a readable script."""
    lines: list[list[str]] = []
    for word in words:
        if lines and not word.startswith("-") and shlex.quote(lines[-1][0]).startswith("-"):
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def refusal(spec: JobSpec, config: SlurmConfig) -> PmanError | None:
    """Why the batch script cannot run ``spec`` with the configured runtime, if
    it cannot: nothing a SLURM command would be asked about."""
    runtime = config.runtime
    if runtime in RUNTIMES_AS_SUBMITTER and (spec.uid is not None or spec.gid is not None):
        return UnsupportedOption(
            f"CONTAINER_USER needs SLURM_CONTAINER_RUNTIME docker or podman, not {runtime}"
        )
    if runtime in RUNTIMES_WITH_ENGINE:
        incoming, outgoing = host_paths(spec, config.storebase)
        for field, path in (("input_dir", incoming), ("output_dir", outgoing)):
            if ":" in path:
                return InvalidJobSpec(
                    f"{field} {path!r} contains ':', which {runtime} cannot bind-mount",
                    fields={field: "contains ':'"},
                )
    elif runtime != "none":
        for entry in spec.env:
            key = entry.partition("=")[0]
            if not _ENV_NAME.fullmatch(key):
                return UnsupportedOption(
                    f"env {key!r} is not a variable name {runtime} can pass to a job",
                    fields={"env": "names must be letters, digits and '_'"},
                )
    return None


def _engine_values(
    spec: JobSpec, config: SlurmConfig, incoming: str, outgoing: str
) -> dict[str, Any]:
    r = spec.resources
    args: list[str] = ["-v", f"{incoming}:{INCOMING}:ro", "-v", f"{outgoing}:{OUTGOING}:rw"]
    for entry in spec.env:
        args += ["-e", entry]
    args += ["-e", "PMAN_WORKER_INDEX", "-e", "PMAN_NUMBER_OF_WORKERS"]
    for key, value in sorted(config.job_labels.items()):
        args += ["--label", f"{key}={value}"]
    if not config.ignore_limits:
        args += [
            f"--memory={r.memory_limit}m",
            f"--memory-swap={r.memory_limit}m",
            f"--cpus={r.cpu_limit / 1000:g}",
        ]
    if config.shm_size is not None:
        args.append(f"--shm-size={config.shm_size}m")
    if spec.uid is not None:
        args.append(f"--user={spec.uid}" + (f":{spec.gid}" if spec.gid is not None else ""))
    elif spec.gid is not None:
        args.append(f"--group-add={spec.gid}")
    return {"options": option_lines(args), "image": spec.image, "command": spec.command}


def _apptainer_values(
    spec: JobSpec, config: SlurmConfig, incoming: str, outgoing: str
) -> dict[str, Any]:
    args = [
        "--containall",
        "--cleanenv",
        "--bind",
        f"{incoming}:{INCOMING}:ro",
        "--bind",
        f"{outgoing}:{OUTGOING}:rw",
    ]
    if spec.resources.gpu_limit > 0:
        args.append("--nv")
    return {
        "options": option_lines(args),
        "image": apptainer_image(spec.image),
        "command": spec.command,
        "env": [entry.partition("=")[::2] for entry in spec.env],
        "env_prefix": "APPTAINERENV_" if config.runtime == "apptainer" else "SINGULARITYENV_",
    }


def _none_values(spec: JobSpec, incoming: str, outgoing: str) -> dict[str, Any]:
    """The command itself, with the container paths rewritten to the real ones."""
    env = [rewrite_text(e, incoming, outgoing) for e in spec.env]
    env += [f"PMAN_INCOMING={incoming}", f"PMAN_OUTGOING={outgoing}"]
    command = [rewrite_text(a, incoming, outgoing) for a in spec.command]
    return {"outgoing": outgoing, "env": env, "command": command}


def build_script(spec: JobSpec, config: SlurmConfig, job_dir: Path) -> str:
    """The batch script of ``spec``: runs the job's command with the runtime,
    records its exit code, and cleans up its container when signalled."""
    refused = refusal(spec, config)
    if refused is not None:
        raise refused
    runtime = config.runtime
    incoming, outgoing = host_paths(spec, config.storebase)
    values: dict[str, Any] = {
        "jid": spec.name,
        "workers": spec.resources.number_of_workers,
        "gpus": spec.resources.gpu_limit,
        "runtime": runtime,
        "job_dir": str(job_dir),
        "path": SCRIPT_PATH,
        "with_engine": runtime in RUNTIMES_WITH_ENGINE,
    }
    if runtime in RUNTIMES_WITH_ENGINE:
        values |= _engine_values(spec, config, incoming, outgoing)
    elif runtime == "none":
        values |= _none_values(spec, incoming, outgoing)
    else:
        values |= _apptainer_values(spec, config, incoming, outgoing)
    return _template().render(values)


def sbatch_options(spec: JobSpec, config: SlurmConfig, job_dir: Path) -> list[str]:
    """sbatch's options for ``spec``: name, marker, log, resources, site options."""
    r = spec.resources
    opts = [
        f"--job-name={spec.name}",
        "--comment="
        + encode_comment(config.instance, spec.fingerprint, spec.auid, r.number_of_workers),
        f"--output={job_dir / 'log'}",
        "--open-mode=append",
        f"--chdir={job_dir}",
        # pman's own environment (its secrets) never reaches a job
        "--export=NONE",
        # a job runs at most once: a requeue would run it over its own output
        "--no-requeue",
        f"--time={config.timelimit_minutes}",
    ]
    if not config.ignore_limits:
        opts.append(f"--cpus-per-task={max(1, math.ceil(r.cpu_limit / 1000))}")
        opts.append(f"--mem={r.memory_limit}M")
    if r.gpu_limit > 0:
        opts.append(f"--gres=gpu:{r.gpu_limit}")
    if r.number_of_workers > 1:
        opts.append(f"--array=1-{r.number_of_workers}")
    if config.partition:
        opts.append(f"--partition={config.partition}")
    if config.account:
        opts.append(f"--account={config.account}")
    if config.qos:
        opts.append(f"--qos={config.qos}")
    opts.extend(config.extra_options)
    return opts
