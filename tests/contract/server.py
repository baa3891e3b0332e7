"""A `pman serve` of any source tree, on the local backend, for the contract.

The server is started from the ``pman`` command of a virtualenv (the
recorded release's, or this tree's own), bound to port 0, with an
environment made from scratch: nothing of the caller's PMAN_* settings
leaks into what is recorded or compared.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import start_server

#: the credentials the scenario uses (fixed: they are part of what is sent)
TOKEN = "contract-token-" + "0" * 40
USER = "chris"
PASSWORD = "chris1234-contract"
#: PMAN_MAX_REQUEST_BYTES of the served pman (small: a 413 is cheap to ask for)
MAX_REQUEST_BYTES = 4096
#: the webhook hosts the served pman may call
ALLOWED_HOSTS = "127.0.0.1"
WEBHOOK_SECRET = "contract-webhook-secret-" + "0" * 16
#: the caller's variables the server may see: nothing of pman's own settings
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


@dataclass(frozen=True)
class Served:
    url: str
    workdir: Path
    storebase: Path


def environment(workdir: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
    env.update(
        {
            "CONTAINER_ENV": "local",
            "STOREBASE": str(workdir / "storebase"),
            "PMAN_DATA_DIR": str(workdir / "data"),
            "PMAN_INSTANCE": "contract",
            "PMAN_AUTH_TOKENS": TOKEN,
            "PMAN_AUTH_USER": USER,
            "PMAN_AUTH_PASSWORD": PASSWORD,
            "SECRET_KEY": secrets.token_hex(32),
            "PMAN_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            # small caps, so that a request over each is small too
            "PMAN_MAX_ARGS": "8",
            "PMAN_MAX_ARG_LENGTH": "512",
            "PMAN_MAX_ENV": "2",
            "PMAN_MAX_CPU_LIMIT": "4000",
            "PMAN_MAX_MEMORY_LIMIT": "1024",
            "PMAN_MAX_WORKERS": "4",
            "PMAN_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PMAN_WEBHOOK_ALLOWED_HOSTS": ALLOWED_HOSTS,
            "PMAN_LOG_FORMAT": "text",
            # `pman serve` starts its tracker as `python -m pman track`: without
            # this, the caller's working directory (a checkout of other code)
            # would come first on that process's sys.path
            "PYTHONSAFEPATH": "1",
        }
    )
    return env


@contextlib.contextmanager
def served_pman(pman: Path, workdir: Path) -> Iterator[Served]:
    """``pman serve`` (the ``pman`` command given) with the local backend and a
    STOREBASE in ``workdir``; stopped (SIGTERM, then its whole group) at the end."""
    storebase = workdir / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("some data\n")
    env = environment(workdir)
    argv = [str(pman), "serve", "--host", "127.0.0.1", "--port", "0", "--workers", "1"]
    proc, url, _ = start_server(
        argv,
        env,
        1,
        stdout=subprocess.DEVNULL,
        new_session=True,
        stderr_copy=workdir / "server.log",
    )
    try:
        yield Served(url, workdir, storebase)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
