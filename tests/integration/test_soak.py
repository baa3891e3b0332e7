"""bench/soak.py, CI-sized: 16 clients for 60 s against `pman serve` on the
docker backend; no server error, no leaked container, flat memory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import run_in_own_group
from tests.integration.conftest import engine_client

ROOT = Path(__file__).resolve().parents[2]
SECONDS = os.environ.get("PMAN_SOAK_SECONDS", "60")
# the soak's own time, its set-up and clean-up (the run's own timeout below), and more
pytestmark = [pytest.mark.soak, pytest.mark.docker, pytest.mark.timeout(float(SECONDS) + 420)]


def test_soak_16_clients_docker() -> None:
    engine_client("docker")  # skip (or fail, in CI) without Docker and the test image
    proc = run_in_own_group(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", SECONDS],
        timeout=float(SECONDS) + 300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
