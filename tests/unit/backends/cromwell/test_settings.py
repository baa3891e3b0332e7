"""What a cromwell resource refuses of its other settings, at start-up, each
named as the variable that holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pman.errors import ConfigError
from pman.settings import load_settings


def test_a_resource_names_its_own_variables_in_cromwells_refusals(tmp_path: Path) -> None:
    environ = {
        "STOREBASE": str(tmp_path),
        "PMAN_DATA_DIR": str(tmp_path),
        "HPC_CONTAINER_ENV": "cromwell",
        "HPC_CROMWELL_URL": "http://cromwell:8000",
        "HPC_SHM_SIZE": "64",
        "CONTAINER_USER": "1000:1000",
        "IGNORE_LIMITS": "yes",
        "JOB_LABELS": f"k={'v' * 256}",
    }
    with pytest.raises(ConfigError) as e:
        load_settings(environ, resource="hpc")
    # each problem names the variable that holds the value: the resource's own,
    # or the unprefixed one it inherited
    assert set(e.value.fields) == {"HPC_SHM_SIZE", "CONTAINER_USER", "IGNORE_LIMITS", "JOB_LABELS"}
    assert "at most 255 characters" in e.value.fields["JOB_LABELS"]
    # without the refused settings the resource loads
    for name in ("HPC_SHM_SIZE", "CONTAINER_USER", "IGNORE_LIMITS", "JOB_LABELS"):
        del environ[name]
    assert load_settings(environ, resource="hpc").resource.container_env == "cromwell"


def test_a_cromwell_resource_needs_its_url_and_host_storage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"CONTAINER_ENV": "cromwell", "STORAGE_TYPE": "nfs", "NFS_SERVER": "n"})
    assert {"CROMWELL_URL", "STORAGE_TYPE", "STOREBASE"} <= set(e.value.fields)
    assert "CONTAINER_ENV=cromwell" in e.value.fields["CROMWELL_URL"]
