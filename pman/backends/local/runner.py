"""Supervisor of one local job: ``python -m pman.backends.local.runner JOBDIR``.

It detaches from pman (so jobs outlive a pman restart and every gunicorn
worker sees the same state), puts the job in its cgroup
(:mod:`pman.backends.local.cgroup`), runs it in its bubblewrap sandbox
(:mod:`pman.backends.local.sandbox`) as ``JOBDIR/spec.json`` says, with
stdout and stderr in ``JOBDIR/output.log``, and records the outcome in
``JOBDIR/result.json``. Files are written whole and renamed into place, so a
reader never sees half a record (:mod:`pman.backends.local.jobdir`). The
supervisor runs as pman's user (root, usually); only the sandbox runs as the
job's.

It imports only what it needs (the sandbox, the cgroups, the job folder's
records), not pman's service nor its settings: it starts on every submit.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pman.backends.local import cgroup as local_cgroup
from pman.backends.local.jobdir import write_json
from pman.backends.local.sandbox import args_fd, child_setup


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _status(fd: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """bwrap's JSON status lines (``--json-status-fd``): ``child-pid`` once it
    has made the sandbox's first process, ``exit-code`` when the command it
    started (set-up done, program executed) has ended."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    found = []
    for line in data.decode(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def _fail(jobdir: Path, message: str, cgroup: dict[str, Any] | None) -> int:
    if cgroup:
        for problem in local_cgroup.remove(cgroup):
            print(problem, file=sys.stderr)
    write_json(jobdir / "result.json", {"exit_code": 127, "error": message, "finished_at": _now()})
    return 0


def supervise(jobdir: Path) -> int:
    spec = json.loads((jobdir / "spec.json").read_text())
    run, cgroup = spec["run"], spec.get("cgroup")
    if (jobdir / "cancelled.json").exists():
        # cancelled before it started (LocalBackend.cancel): never run it
        write_json(jobdir / "result.json", {"exit_code": 143, "finished_at": _now()})
        return 0
    join = None
    if cgroup:
        try:
            local_cgroup.create(cgroup)
        except OSError as e:
            return _fail(jobdir, f"could not set the job's cpu and memory limits: {e}", cgroup)

        def join(pid: int) -> None:
            local_cgroup.join(cgroup, pid)

    options = args_fd(run)
    status_read, status_write = os.pipe()
    argv = [run["bwrap"], "--args", str(options), "--json-status-fd", str(status_write)]
    with open(jobdir / "output.log", "ab") as log:
        try:
            child = subprocess.Popen(
                [*argv, *run["args"]],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={},
                cwd="/",
                pass_fds=(options, status_write),
                preexec_fn=child_setup(run, join),
            )
        except (OSError, subprocess.SubprocessError) as e:
            return _fail(jobdir, f"could not start its sandbox: {e} (see the job's log)", cgroup)
        finally:
            os.close(options)
            os.close(status_write)
        write_json(jobdir / "started.json", {"pid": child.pid, "started_at": _now()})

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        returncode = child.wait()
    status = _status(status_read)
    os.close(status_read)
    oom = local_cgroup.oom_kills(cgroup) if cgroup else 0
    if cgroup:
        for problem in local_cgroup.remove(cgroup):
            print(problem, file=sys.stderr)
    result: dict[str, Any] = {"finished_at": _now()}
    if returncode < 0:
        result["signal"] = -returncode
        result["exit_code"] = 128 - returncode
    else:
        result["exit_code"] = returncode
    if oom and returncode != 0:
        result["oom"] = True
    elif returncode >= 0 and not any("exit-code" in s for s in status):
        # bwrap reports an exit code only for a command it started: it said
        # in the job's log why it did not, and its own exit code is not the job's
        result["error"] = (
            f"its sandbox could not be set up or its program not started (bwrap exit code "
            f"{returncode}; see the job's log)"
        )
    write_json(jobdir / "result.json", result)
    return 0


def main() -> None:
    jobdir = Path(sys.argv[1])
    # Double fork: pman's child exits at once (pman reaps it) and the supervisor
    # is adopted by init, in a session and process group of its own that the
    # job inherits, so pman can signal the whole group.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    # Let go of pman's pipes (pman waits for them to close); the supervisor's
    # own complaints go to the job folder.
    devnull = os.open(os.devnull, os.O_RDWR)
    errors = os.open(jobdir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd, target in ((0, devnull), (1, errors), (2, errors)):
        os.dup2(target, fd)
    write_json(jobdir / "runner.json", {"pid": os.getpid(), "pgid": os.getpgrp()})
    os._exit(supervise(jobdir))


if __name__ == "__main__":
    main()
