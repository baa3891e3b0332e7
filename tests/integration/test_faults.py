"""The fault scripts of scripts/faults/, CI-sized: each runs as a subprocess
and must exit 0 (it prints its figures, which -s shows). They need Docker
with the test image; the engine-outage one stops and restarts dockerd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import engine_client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.faults, pytest.mark.docker]


def run_script(name: str, *args: str, timeout: float = 300) -> None:
    engine_client("docker")  # skip (or fail, in CI) without Docker and the test image
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "faults" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]


def test_engine_outage_gives_503_then_every_job_ends_as_docker_says() -> None:
    run_script("engine_outage.py", "--sleepers", "2", "--sleep", "15")


def test_sigkill_during_200_submissions_loses_and_duplicates_nothing() -> None:
    run_script("pman_sigkill.py", "--jobs", "200", "--threads", "32", "--kill-after", "40")


def test_sigterm_lets_in_flight_requests_finish() -> None:
    run_script("sigterm_inflight.py", "--requests", "16")
