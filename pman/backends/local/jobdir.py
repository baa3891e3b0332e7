"""A local job's folder, ``PMAN_DATA_DIR/local/jobs/<jid>``: its records
(JSON files written whole and renamed into place, so a reader never sees half
of one) and its supervisor's process.

Records: ``spec.json`` (pman: the job and how to run it), ``runner.json``
(the supervisor's pid and process group), ``started.json``, ``result.json``
(the supervisor), ``cancelled.json`` (pman, on cancel); the job's output in
``output.log``, the supervisor's own complaints in ``supervisor.log``.

Imported by the supervisor too: nothing here may import pman's service.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from pman.backends.local import cgroup as local_cgroup
from pman.errors import BackendError

log = logging.getLogger(__name__)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A record; None if it is not there (yet)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise BackendError(f"local job record {path} is unreadable: {e}") from e


def pid_runs(pid: int, jobdir: Path) -> bool:
    """True if ``pid`` is alive and is the supervisor of ``jobdir`` (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and str(jobdir).encode() in cmdline


def stop_supervisor(pid: int, pgid: int, jobdir: Path) -> None:
    """Stop the supervisor's whole session, then wait until it is gone, so that
    it cannot write into a folder a new job of the same name gets."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not pid_runs(pid, jobdir):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and pid_runs(pid, jobdir):
            time.sleep(0.02)
    if pid_runs(pid, jobdir):
        raise BackendError(f"local job supervisor {pid} did not stop after SIGKILL")


def remove_cgroup(jobdir: Path) -> None:
    """Remove what a supervisor killed with SIGKILL left of the job's cgroup
    (a supervisor that ends normally removes it itself)."""
    try:
        spec = read_json(jobdir / "spec.json")
    except BackendError:
        return
    cgroup = (spec or {}).get("cgroup")
    if cgroup:
        for problem in local_cgroup.remove(cgroup):
            log.warning("local job %s: %s", jobdir.name, problem)
