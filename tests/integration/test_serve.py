"""The installed `pman serve` command: granian, several workers, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import job_body, start_server
from tests.integration.conftest import PLUGIN_BIN

pytestmark = pytest.mark.local


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    storebase = tmp_path / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("served\n")
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
    }
    pman = Path(sys.executable).with_name("pman")
    proc, url, _ = start_server([str(pman), "serve", "--port", "0", "--workers", "3"], env, 3)
    try:
        yield url, storebase
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_pman_serve_runs_jobs_across_workers(served: tuple[str, Path]) -> None:
    url, storebase = served
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    bodies = [
        job_body(entrypoint=[str(PLUGIN_BIN / "copyplugin")], output_dir=f"key-1/out-{i}")
        for i in range(6)
    ]
    for b in bodies:
        assert requests.post(f"{url}/api/v1/", json=b, timeout=30).status_code == 201
    # every worker answers for every job: the state is not in one worker's memory
    for b in bodies:
        deadline = time.monotonic() + 30
        while True:
            data = requests.get(f"{url}/api/v1/{b['jid']}/", timeout=30).json()
            if data["status"] == "finishedSuccessfully" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert data["status"] == "finishedSuccessfully", data
        assert (storebase / b["output_dir"] / "out-data.txt").read_text() == "served\n"
        assert requests.delete(f"{url}/api/v1/{b['jid']}/", timeout=30).status_code == 204


def test_bad_settings_stop_pman_serve_with_one_message(tmp_path: Path) -> None:
    pman = Path(sys.executable).with_name("pman")
    env = {**os.environ, "CONTAINER_ENV": "kubernetes-ish", "JOB_LOGS_TAIL": "lots"}
    env.pop("STOREBASE", None)
    proc = subprocess.run(
        [str(pman), "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    for name in ("CONTAINER_ENV", "JOB_LOGS_TAIL", "STOREBASE"):
        assert name in proc.stderr
    assert "Traceback" not in proc.stderr
