"""The slurm backend's settings."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pman.backends import load_backend
from pman.backends.slurm import SlurmBackend
from pman.backends.slurm.settings import SlurmSettings
from pman.errors import ConfigError
from pman.settings import load_settings
from tests.unit.backends.slurm.helpers import settings

# ---------------------------------------------------------------- settings


def test_slurm_settings_defaults(tmp_path: Path) -> None:
    s = load_settings({"CONTAINER_ENV": "slurm", "STOREBASE": "/sb", "PMAN_DATA_DIR": "/d"})
    slurm = s.resource.engine_as(SlurmSettings)
    assert slurm.job_dir == Path("/d/slurm/jobs")
    assert slurm.container_runtime == "apptainer"
    assert slurm.partition is None and slurm.extra_options == ()
    assert slurm.bin_dir is None and slurm.conf is None


def test_slurm_settings_errors_all_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            {
                "CONTAINER_ENV": "slurm",
                "STOREBASE": "/sb",
                "SLURM_CONTAINER_RUNTIME": "lxc",
                "SLURM_PARTITION": "two words",
                "SLURM_ACCOUNT": "a;b",
                "SLURM_QOS": "q'",
                "SLURM_EXTRA_OPTIONS": "--output=/tmp/x",
                "SLURM_BIN_DIR": "relative/bin",
            }
        )
    assert set(e.value.fields) == {
        "SLURM_CONTAINER_RUNTIME",
        "SLURM_PARTITION",
        "SLURM_ACCOUNT",
        "SLURM_QOS",
        "SLURM_EXTRA_OPTIONS",
        "SLURM_BIN_DIR",
    }


@pytest.mark.parametrize(
    "options",
    ["-J name", "-Jname", "--job-name=x", "--array=1-3", "--time 10", "--mem=1G", "--export=ALL",
     "--wrap=true", "notanoption", "--constraint='unclosed"],
)  # fmt: skip
def test_extra_options_pman_sets_itself_are_refused(options: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            {"CONTAINER_ENV": "slurm", "STOREBASE": "/sb", "SLURM_EXTRA_OPTIONS": options}
        )
    assert "SLURM_EXTRA_OPTIONS" in e.value.fields


def test_settings_the_runtime_cannot_honour() -> None:
    base = {"CONTAINER_ENV": "slurm", "STOREBASE": "/sb"}
    with pytest.raises(ConfigError) as e:
        load_settings({**base, "CONTAINER_USER": "1000:1000", "SHM_SIZE": "64"})
    assert set(e.value.fields) == {"CONTAINER_USER", "SHM_SIZE"}  # apptainer
    s = load_settings({**base, "SLURM_CONTAINER_RUNTIME": "docker", "CONTAINER_USER": "1:1"})
    assert s.resource.jobs.container_user.uid is not None
    with pytest.raises(ConfigError) as e:
        load_settings({**base, "STORAGE_TYPE": "kubernetes_pvc", "VOLUME_NAME": "v"})
    assert "STORAGE_TYPE" in e.value.fields


def test_from_settings_runs_no_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a command ran")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    backend = load_backend("slurm", settings(tmp_path))
    assert isinstance(backend, SlurmBackend)
    assert not backend.jobs_dir.exists()
