"""The local backend: what it refuses before submitting, and a job folder's logs, without
running a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pman.backends.local import LocalBackend
from pman.backends.local.cgroup import CgroupSupport
from pman.errors import BackendUnavailable, JobNotFound, UnsupportedOption
from pman.models import JobSpec, Mounts, Resources


def _spec(tmp_path: Path, **kw: Any) -> JobSpec:
    resources = {"number_of_workers": 1, "cpu_limit": 1000, "memory_limit": 64, "gpu_limit": 0}
    mounts = Mounts("in", "out", tmp_path / "in", tmp_path / "out")
    fields: dict[str, Any] = {
        "name": "j",
        "image": "img",
        "command": ["true"],
        "env": [],
        "mounts": mounts,
        "plugin_type": "fs",
        "auid": "chris",
        "fingerprint": "f",
    }
    for key in list(kw):
        if key in resources:
            resources[key] = kw.pop(key)
    return JobSpec(resources=Resources(**resources), **{**fields, **kw})


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"gpu_limit": 1}, "gpu_limit", "cannot give a job GPUs"),
        ({"number_of_workers": 2}, "number_of_workers", "one worker per job"),
        ({"memory_limit": 5}, "memory_limit", "below the local backend's minimum of 6 MiB"),
        ({"uid": 1000, "gid": 1000}, None, "CONTAINER_USER is not supported"),
        ({"mounts": Mounts("in", "out")}, None, "needs STORAGE_TYPE=host"),
    ],
)
def test_what_the_local_backend_can_never_run_is_refused_before_submit(
    tmp_path: Path, change: dict[str, Any], field: str | None, words: str
) -> None:
    """check() refuses without touching the host; submit() refuses the same
    (even a backend without a sandbox: check() comes first)."""
    cgroups = CgroupSupport(2, {"memory": tmp_path / "cg"})
    backend = LocalBackend(tmp_path / "jobs", tmp_path, cgroups=cgroups)
    spec = _spec(tmp_path, **change)
    with pytest.raises(UnsupportedOption) as e:
        backend.check(spec)
    assert words in e.value.message
    assert list(e.value.fields) == ([field] if field else [])
    assert not (tmp_path / "jobs").exists()
    # without a memory cgroup nothing enforces a minimum
    if field == "memory_limit":
        LocalBackend(tmp_path / "jobs", tmp_path).check(spec)
    backend.check(_spec(tmp_path))


def test_a_backend_without_a_sandbox_cannot_submit(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable):
        LocalBackend(tmp_path / "jobs", tmp_path).submit(_spec(tmp_path))


def test_logs_of_a_job_folder(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "jobs", tmp_path)
    for call in (
        lambda: backend.logs("j", 5),
        lambda: backend.iter_logs("j"),
        lambda: backend.cancel("j"),
    ):
        with pytest.raises(JobNotFound):
            call()
    jobdir = tmp_path / "jobs" / "j"
    jobdir.mkdir(parents=True)
    (jobdir / "spec.json").write_text("{}")
    (jobdir / "output.log").write_text("a\nb\nc\n")
    assert backend.logs("j", 2) == "b\nc\n"
    assert b"".join(backend.iter_logs("j")) == b"a\nb\nc\n"
    with pytest.raises(JobNotFound):
        backend.logs("../j", 2)  # never a path out of the jobs folder
