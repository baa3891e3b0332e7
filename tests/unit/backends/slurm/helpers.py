"""What the slurm backend's unit tests share: pman's settings and the
backend's configuration for a test, a job, a row of squeue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pman.backends.slurm.client import QueueRow
from pman.backends.slurm.comment import encode_comment
from pman.backends.slurm.config import SlurmConfig, from_settings
from pman.models import JobSpec, Mounts, Resources
from pman.settings import Settings, load_settings


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(
        {
            "CONTAINER_ENV": "slurm",
            "STOREBASE": str(tmp_path / "sb"),
            "PMAN_DATA_DIR": str(tmp_path / "data"),
            "SLURM_CONTAINER_RUNTIME": "docker",
            **env,
        }
    )


def config(tmp_path: Path, **env: str) -> SlurmConfig:
    return from_settings(settings(tmp_path, **env))


def spec(tmp_path: Path, **resources: int) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="fnndsc/pl-simpledsapp:2.1",
        command=["simpledsapp", "--prefix", "it's", "/share/incoming", "/share/outgoing"],
        env=["GREETING=hello world", "WHERE=/share/outgoing/x"],
        resources=Resources(
            **{
                "number_of_workers": 1,
                "cpu_limit": 1500,
                "memory_limit": 300,
                "gpu_limit": 0,
                **resources,
            }
        ),
        mounts=Mounts(
            "key/in", "key/out", tmp_path / "sb" / "key" / "in", tmp_path / "sb" / "key" / "out"
        ),
        plugin_type="ds",
        auid="chris",
        fingerprint="f" * 32,
        labels={"org.chrisproject.pman": "true"},
    )


def row(state: str, task: int | None = None, status: int | None = None, **kw: Any) -> QueueRow:
    values: dict[str, Any] = {
        "job_id": str(100 + (task or 0)),
        "array_job_id": "100",
        "array_task_id": task,
        "state": state,
        "exit_status": status,
        "submit_time": "2026-11-26T12:00:00",
        "start_time": "2026-11-26T12:00:01",
        "end_time": "N/A",
        "reason": "None",
        "name": "job-1",
        "comment": encode_comment("inst", "f" * 32, "chris", 1),
    }
    values.update(kw)
    return QueueRow(**values)
