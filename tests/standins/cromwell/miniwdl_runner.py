"""miniwdl with the container backend of the Cromwell stand-in.

The stand-in runs each workflow as ``python -m tests.standins.cromwell.miniwdl_runner
run WDL -i INPUTS --dir DIR/. --cfg CFG --error-json -o RESULT``: miniwdl's
own command line, with one more container backend, ``pman_standin``. It is
miniwdl's Docker Swarm backend (each task a swarm service on the local
engine) plus what a site's Cromwell SLURM configuration does for pman:

- binds the runtime attributes ``pman_incoming`` (read-only) and
  ``pman_outgoing`` at /share/incoming and /share/outgoing;
- enforces ``runtime_minutes`` as the task's wall-clock limit (SLURM's
  ``--time``); ``PMAN_CROMWELL_STANDIN_MINUTE`` sets the seconds of a
  "minute" so that tests need not wait one;
- fails a task that asks for GPUs: there are none here;
- writes, next to miniwdl's files in the task's folder, what Cromwell's
  metadata reports: ``runtime_attributes.json`` (the evaluated runtime
  section), ``started`` (when the container ran) and ``rc`` (the command's
  exit code, as Cromwell's own ``rc`` file).

miniwdl applies ``cpu`` as the service's CPU limit and, with
``memory_limit_multiplier = 1`` in the stand-in's configuration, ``memory``
as its memory limit. The CPU reservation miniwdl adds is dropped: the test
machine is small and shared, and a reservation of whole cores would keep
tasks pending behind other tests' services.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import docker
from WDL import Error, Type, Value
from WDL.runtime import task_container
from WDL.runtime.backend.docker_swarm import SwarmContainer
from WDL.runtime.error import Terminated

#: label on every swarm service and container of the stand-in (its instance id)
STANDIN_LABEL = "org.chrisproject.pman.cromwell-standin"
#: seconds in one minute of ``runtime_minutes`` (default 60)
MINUTE_ENV = "PMAN_CROMWELL_STANDIN_MINUTE"
INCOMING = "/share/incoming"
OUTGOING = "/share/outgoing"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_text(value: Value.Base) -> str:
    """A runtime attribute as Cromwell's metadata shows it: a string."""
    if isinstance(value, Value.String):
        return value.value
    return json.dumps(value.json)


def _escape(text: str) -> str:
    # the swarm expands Go templates in mount sources
    return text.replace("{{", '{{"{{"}}')


class StandInContainer(SwarmContainer):
    """miniwdl's swarm container with pman's mounts, time limit and records."""

    def process_runtime(self, logger: logging.Logger, runtime_eval: dict[str, Any]) -> None:
        super().process_runtime(logger, runtime_eval)
        with open(os.path.join(self.host_dir, "runtime_attributes.json"), "w") as f:
            json.dump({k: _as_text(v) for k, v in runtime_eval.items()}, f)
        for key in ("pman_incoming", "pman_outgoing"):
            if key in runtime_eval:
                self.runtime_values[key] = runtime_eval[key].coerce(Type.String()).value
        for key in ("runtime_minutes", "gpuCount"):
            if key in runtime_eval:
                self.runtime_values[key] = runtime_eval[key].coerce(Type.Int()).value

    def prepare_mounts(self, logger: logging.Logger) -> list[docker.types.Mount]:
        mounts = super().prepare_mounts(logger)
        for key, target, read_only in (
            ("pman_incoming", INCOMING, True),
            ("pman_outgoing", OUTGOING, False),
        ):
            source = self.runtime_values.get(key)
            if source:
                mounts.append(
                    docker.types.Mount(target, _escape(source), type="bind", read_only=read_only)
                )
        return mounts

    def misc_config(self, logger: logging.Logger) -> tuple[Any, Any, list[str]]:
        resources, user, groups = super().misc_config(logger)
        if resources and "Reservations" in resources:
            resources["Reservations"].pop("NanoCPUs", None)
        return resources, user, groups

    def poll_service(self, logger: logging.Logger, svc: Any, verbose: bool = False) -> int | None:
        code = super().poll_service(logger, svc, verbose)
        started = os.path.join(self.host_dir, "started")
        if "running" in (self._observed_states or set()) and not os.path.exists(started):
            with open(started, "w") as f:
                f.write(_now())
        return code

    def _run(self, logger: logging.Logger, terminating: Callable[[], bool], command: str) -> int:
        gpus = self.runtime_values.get("gpuCount") or (1 if self.runtime_values.get("gpu") else 0)
        if gpus:
            raise Error.RuntimeError(f"gpuCount {gpus}: this Cromwell stand-in has no GPU")
        labels = {"miniwdl_run_id": self.run_id, STANDIN_LABEL: os.environ.get(STANDIN_LABEL, "")}
        self.create_service_kwargs = {"labels": labels, "container_labels": labels}
        minutes = self.runtime_values.get("runtime_minutes")
        deadline = None
        if minutes:
            deadline = time.monotonic() + minutes * float(os.environ.get(MINUTE_ENV, "60"))
        timed_out = False

        def limited() -> bool:
            nonlocal timed_out
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
            return timed_out or terminating()

        try:
            code = super()._run(logger, limited, command)
        except Terminated:
            if timed_out:
                raise Error.RuntimeError(
                    f"Job exceeded its time limit of {minutes} minutes (runtime_minutes) "
                    "and was killed"
                ) from None
            raise
        with open(os.path.join(self.host_dir, "rc"), "w") as f:
            f.write(str(code))
        return code


def register() -> None:
    """Make ``pman_standin`` a container backend next to miniwdl's own."""
    from WDL.runtime import config

    with task_container._backends_lock:
        if not task_container._backends:
            cfg = config.Loader(logging.getLogger("miniwdl-standin"), [])
            for name, cls in config.load_plugins(cfg, "container_backend"):
                task_container._backends[name] = cls
        task_container._backends["pman_standin"] = StandInContainer


def main(argv: list[str] | None = None) -> None:
    import WDL.CLI

    register()
    WDL.CLI.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
