"""The fault scripts of scripts/faults/, CI-sized: each runs as a subprocess
and must exit 0 (it prints its figures, which -s shows). They need Docker
with the test image; the engine-outage one stops and restarts dockerd."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import run_in_own_group
from tests.integration.conftest import engine_client

ROOT = Path(__file__).resolve().parents[2]
# each script gets up to 300 s (run_script), and time to put back what it stopped
pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.timeout(600)]


def run_script(name: str, *args: str, timeout: float = 300) -> None:
    engine_client("docker")  # skip (or fail, in CI) without Docker and the test image
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # ended with its every process if it outlives ``timeout`` or pytest's own
    # (SIGINT first: the engine-outage script's finally restarts dockerd)
    proc = run_in_own_group(
        [sys.executable, str(ROOT / "scripts" / "faults" / name), *args],
        timeout=timeout,
        grace=150,
        env=env,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]


def test_engine_outage_gives_503_then_every_job_ends_as_docker_says() -> None:
    run_script("engine_outage.py", "--sleepers", "2", "--sleep", "15")


def test_sigkill_during_200_submissions_loses_and_duplicates_nothing() -> None:
    run_script("pman_sigkill.py", "--jobs", "200", "--threads", "32", "--kill-after", "40")


def test_sigterm_lets_in_flight_requests_finish() -> None:
    run_script("sigterm_inflight.py", "--requests", "16")
