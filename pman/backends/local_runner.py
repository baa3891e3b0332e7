"""Supervisor of one local job: ``python -m pman.backends.local_runner JOBDIR``.

It detaches from pman (so jobs outlive a pman restart and every gunicorn
worker sees the same state), runs the command from ``JOBDIR/spec.json`` with
stdout and stderr in ``JOBDIR/output.log``, and records the outcome in
``JOBDIR/result.json``. Files are written whole and renamed into place, so a
reader never sees half a record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def supervise(jobdir: Path) -> int:
    spec = json.loads((jobdir / "spec.json").read_text())
    env = dict(os.environ if spec.get("inherit_env") else {"PATH": os.environ.get("PATH", "")})
    env.update(spec["env"])
    if (jobdir / "cancelled.json").exists():
        # cancelled before it started (LocalBackend.cancel): never run it
        write_json(jobdir / "result.json", {"exit_code": 143, "finished_at": _now()})
        return 0
    with open(jobdir / "output.log", "ab") as log:
        try:
            child = subprocess.Popen(
                spec["host_command"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec["cwd"],
            )
        except OSError as e:
            write_json(
                jobdir / "result.json",
                {"exit_code": 127, "error": f"could not start: {e}", "finished_at": _now()},
            )
            return 0
        write_json(jobdir / "started.json", {"pid": child.pid, "started_at": _now()})

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        returncode = child.wait()
    result: dict[str, Any] = {"finished_at": _now()}
    if returncode < 0:
        result["signal"] = -returncode
        result["exit_code"] = 128 - returncode
    else:
        result["exit_code"] = returncode
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
