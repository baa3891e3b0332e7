"""bench/soak.py, CI-sized: 16 clients for 60 s against `pman serve` on the
docker backend; no server error, no leaked container, flat memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import engine_client

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.soak, pytest.mark.docker]
SECONDS = os.environ.get("PMAN_SOAK_SECONDS", "60")


def test_soak_16_clients_docker() -> None:
    engine_client("docker")  # skip (or fail, in CI) without Docker and the test image
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", SECONDS],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=float(SECONDS) + 300,
        check=False,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
