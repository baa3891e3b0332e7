"""SLURM's failures as pman's errors, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from pman.backends.slurm.errors import (
    fields_too_big,
    gpus,
    nothing_to_cancel,
    request_error,
    translate,
)
from pman.backends.slurm.runner import SlurmCommandError
from pman.errors import BackendError, BackendUnavailable, UnsupportedOption
from pman.models import Resources
from tests.unit.backends.slurm.helpers import spec


def err(stderr: str, returncode: int | None = 1, timed_out: bool = False) -> SlurmCommandError:
    return SlurmCommandError(("squeue", "--me"), returncode, "", stderr, timed_out)


def test_translate() -> None:
    def t(e: Exception) -> Exception:
        return translate(e, "listing jobs with squeue", where="SLURM cluster", timeout=5)

    down = t(err("", None, timed_out=True))
    assert type(down) is BackendUnavailable
    assert down.message == (
        "SLURM cluster did not answer within 5 s while listing jobs with squeue (`squeue --me`)"
    )
    missing = t(err("[Errno 2] No such file or directory: 'squeue'", None))
    assert type(missing) is BackendUnavailable and "SLURM_BIN_DIR" in missing.message
    unreachable = t(err("squeue: error: Unable to contact slurm controller (connect failure)"))
    assert type(unreachable) is BackendUnavailable
    assert "slurmctld is unreachable" in unreachable.message
    partition = t(err("sbatch: error: invalid partition specified: x"))
    assert type(partition) is BackendError and "(check SLURM_PARTITION)" in partition.message
    other = t(err("squeue: error: boom"))
    assert type(other) is BackendError
    assert other.message.startswith("SLURM cluster failed listing jobs with squeue: `squeue")
    files = t(PermissionError(13, "Permission denied"))
    assert type(files) is BackendError
    assert files.message == (
        "SLURM cluster: listing jobs with squeue failed: [Errno 13] Permission denied"
    )


def test_request_errors(tmp_path: Path) -> None:
    sp = spec(tmp_path, number_of_workers=5000)
    array = request_error(err("Invalid job array specification"), sp, lambda: [])
    assert isinstance(array, UnsupportedOption) and set(array.fields) == {"number_of_workers"}
    big = request_error(
        err("Requested node configuration is not available"), sp, lambda: ["memory_limit"]
    )
    assert isinstance(big, UnsupportedOption) and set(big.fields) == {"memory_limit"}
    assert "(memory_limit=300)" in big.message
    assert request_error(err("something else"), sp, lambda: []) is None


def test_fields_no_node_can_give() -> None:
    r = Resources(number_of_workers=1, cpu_limit=4000, memory_limit=100, gpu_limit=2)
    nodes = [(2, 24000, "(null)"), (8, 512, "gpu:1")]
    assert fields_too_big(r, nodes) == ["gpu_limit"]
    assert fields_too_big(r, [(2, 50, "(null)")]) == ["cpu_limit", "memory_limit", "gpu_limit"]
    assert fields_too_big(r, None) == ["cpu_limit", "memory_limit", "gpu_limit"]
    # nothing stands out: every field asked for
    assert fields_too_big(r, [(8, 512, "gpu:a100:4(S:0-1)")]) == [
        "cpu_limit",
        "memory_limit",
        "gpu_limit",
    ]
    assert gpus("gpu:2,gpu:a100:4(S:0-1)") == 6
    assert gpus("(null)") == 0


@pytest.mark.parametrize(
    ("stderr", "nothing"),
    [
        ("scancel: error: Kill job error on job id 1: Job/step already completing or completed",
         True),
        ("scancel: error: Invalid job id specified", True),
        ("scancel: error: Access/permission denied", False),
    ],
)  # fmt: skip
def test_nothing_to_cancel(stderr: str, nothing: bool) -> None:
    assert nothing_to_cancel(err(stderr)) is nothing
