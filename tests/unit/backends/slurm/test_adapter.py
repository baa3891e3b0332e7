"""The slurm backend with faked SLURM tools: submit, get, list, delete, errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pman.backends.slurm import SlurmBackend
from pman.backends.slurm.client import QueueRow, SlurmClient, squeue_format
from pman.backends.slurm.comment import encode_comment
from pman.backends.slurm.runner import CommandResult, SlurmCommandError
from pman.backends.slurm.script import sbatch_options
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
from pman.models import JobState, Mounts
from tests.unit.backends.slurm.helpers import config, row, spec

# ---------------------------------------------------------------- the backend, faked tools


class FakeClient(SlurmClient):
    def __init__(self, rows: list[QueueRow] | None = None, error: Exception | None = None):
        super().__init__()
        self.rows = rows or []
        self.error = error
        self.cancelled: list[str] = []
        self.nodes = [(2, 24000, "(null)")]

    def sbatch(self, options: Any, script: Path) -> str:
        if self.error:
            raise self.error
        return "100"

    def squeue(self, *, all_states: bool, job_id: str | None = None) -> list[QueueRow]:
        if self.error:
            raise self.error
        return [r for r in self.rows if job_id is None or r.array_job_id == job_id]

    def scancel(self, job_id: str) -> None:
        if self.error:
            raise self.error
        self.cancelled.append(job_id)

    def node_limits(self, partition: str | None) -> list[tuple[int, int, str]]:
        return self.nodes


def err(stderr: str, returncode: int | None = 1, timed_out: bool = False) -> SlurmCommandError:
    return SlurmCommandError(("sbatch", "x"), returncode, "", stderr, timed_out)


@pytest.mark.parametrize(
    ("error", "expected", "fields"),
    [
        (err("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
             "(connect failure)"), BackendUnavailable, None),
        (err("", None, timed_out=True), BackendUnavailable, None),
        (err("[Errno 2] No such file or directory: 'sbatch'", None), BackendUnavailable, None),
        (err("sbatch: error: Batch job submission failed: Requested node configuration is not "
             "available"), UnsupportedOption, {"memory_limit"}),
        (err("sbatch: error: Memory specification can not be satisfied"), UnsupportedOption,
         {"memory_limit"}),
        (err("sbatch: error: Batch job submission failed: Invalid job array specification"),
         UnsupportedOption, {"number_of_workers"}),
        (err("sbatch: error: Batch job submission failed: Invalid partition name specified"),
         BackendError, None),
        (err("sbatch: error: something else"), BackendError, None),
    ],
)  # fmt: skip
def test_sbatch_errors(
    tmp_path: Path, error: SlurmCommandError, expected: type, fields: set[str] | None
) -> None:
    s = config(tmp_path)
    backend = SlurmBackend(FakeClient(error=error), s)
    with pytest.raises(expected) as e:
        backend.submit(spec(tmp_path, memory_limit=10**8))
    assert type(e.value) is expected
    if fields is not None:
        assert set(e.value.fields) == fields
    assert not (s.job_dir / "job-1").exists()  # a refused job leaves nothing


def test_submit_get_list_delete_with_fake_tools(tmp_path: Path) -> None:
    s = config(tmp_path)
    client = FakeClient()
    backend = SlurmBackend(client, s)
    info = backend.submit(spec(tmp_path))
    assert (info.state, info.native_id) == (JobState.QUEUED, "100")
    jobdir = s.job_dir / "job-1"
    assert json.loads((jobdir / "meta.json").read_text())["slurm_id"] == "100"
    with pytest.raises(JobExists):
        backend.submit(spec(tmp_path))

    comment = encode_comment(s.instance, "f" * 32, "chris", 1)
    client.rows = [
        # an older, deleted submission of the same jid, still kept by SLURM
        row("CANCELLED", job_id="90", array_job_id="90", comment=comment),
        row("COMPLETED", status=0, comment=comment),
        row("RUNNING", name="not-pman", job_id="7", array_job_id="7", comment="(null)"),
    ]
    (jobdir / "log").write_text("".join(f"line {i}\n" for i in range(100)))
    (jobdir / "exit.1").write_text("0\n")
    got = backend.get("job-1")
    assert (got.state, got.exit_code, got.image) == (JobState.SUCCEEDED, 0, spec(tmp_path).image)
    listed = backend.list()
    assert [(i.name, i.native_id) for i in listed] == [("job-1", "100")]
    assert listed[0].labels["org.chrisproject.pman.auid"] == "chris"
    assert backend.logs("job-1", 2) == "line 98\nline 99\n"

    backend.delete("job-1")
    assert client.cancelled == ["100"] and not jobdir.exists()
    backend.delete("job-1")  # twice is fine
    assert backend.list() == []  # SLURM still lists it; pman does not
    with pytest.raises(JobNotFound):
        backend.get("job-1")
    with pytest.raises(JobNotFound):
        backend.logs("../etc", 10)


def test_delete_of_a_finished_job_is_not_an_error(tmp_path: Path) -> None:
    s = config(tmp_path)
    client = FakeClient()
    backend = SlurmBackend(client, s)
    backend.submit(spec(tmp_path))
    client.error = err("scancel: error: Kill job error on job id 100: Job/step already "
                       "completing or completed")  # fmt: skip
    backend.delete("job-1")
    assert not (s.job_dir / "job-1").exists()


def test_a_job_slurm_forgot_is_decided_by_its_files(tmp_path: Path) -> None:
    backend = SlurmBackend(FakeClient(), config(tmp_path))
    backend.submit(spec(tmp_path))
    jobdir = backend.jobs_dir / "job-1"
    assert backend.get("job-1").reason == "vanished"
    (jobdir / "exit.1").write_text("2\n")
    got = backend.get("job-1")
    assert (got.state, got.exit_code) == (JobState.FAILED, 2)


# ---------------------------------------------------------------- check before recording


@pytest.mark.parametrize(
    ("runtime", "change", "field"),
    [
        ("apptainer", {"env": ["NOT-A-NAME=1"]}, "env"),
        ("docker", {"mounts": Mounts("a:b", "out", None, None)}, "input_dir"),
        ("none", {"uid": 1000}, None),
    ],
)
def test_check_refuses_without_a_command(
    tmp_path: Path, runtime: str, change: dict[str, Any], field: str | None
) -> None:
    runner = ScriptedRunner()
    c = config(tmp_path, SLURM_CONTAINER_RUNTIME=runtime)
    backend = SlurmBackend(SlurmClient(runner), c)
    sp = replace(spec(tmp_path), **change)
    with pytest.raises((UnsupportedOption, InvalidJobSpec)) as e:
        backend.check(sp)
    if field is not None:
        assert set(e.value.fields) == {field}
    # a direct submit refuses it the same way, and leaves nothing behind
    with pytest.raises(type(e.value)):
        backend.submit(sp)
    assert runner.commands == [] and not c.job_dir.exists()
    backend.check(spec(tmp_path))  # the job as it was is fine


# ---------------------------------------------------------------- another runner


class ScriptedRunner:
    """A runner that answers from a script instead of running SLURM's tools
    (as a runner over SSH would run them elsewhere): the adapter only sees
    what any runner gives."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.commands: list[list[str]] = []
        self.calls: dict[str, int] = {}

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.commands.append(list(argv))
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        return CommandResult(tuple(argv), 0, self.answers.get(argv[0], ""), "")


def test_the_commands_a_job_takes(tmp_path: Path) -> None:
    c = config(tmp_path)
    comment = encode_comment(c.instance, "f" * 32, "chris", 1)
    line = "|".join(
        ["100", "100", "N/A", "COMPLETED", "0", "2026-11-26T12:00:00", "2026-11-26T12:00:01",
         "2026-11-26T12:00:09", "None", "job-1", comment, ""]
    )  # fmt: skip
    runner = ScriptedRunner({"sbatch": "100\n", "squeue": line + "\n", "scontrol": "UP\n"})
    backend = SlurmBackend(SlurmClient(runner), c)
    jobdir = c.job_dir / "job-1"
    backend.submit(spec(tmp_path))
    (jobdir / "exit.1").write_text("0\n")
    assert backend.get("job-1").state is JobState.SUCCEEDED
    assert [i.name for i in backend.list_active()] == ["job-1"]
    backend.ping()
    backend.delete("job-1")
    sbatch, *others = runner.commands
    assert sbatch == [
        "sbatch",
        "--parsable",
        *sbatch_options(spec(tmp_path), c, jobdir),
        str(jobdir / "job.sh"),
    ]
    fmt = f"--Format={squeue_format()}"
    assert others == [
        ["squeue", "--noheader", "--array", "--me", fmt, "--states=all", "--jobs=100"],
        ["squeue", "--noheader", "--array", "--me", fmt],
        ["scontrol", "ping"],
        ["scancel", "100"],
    ]
    assert backend.client.calls == {"sbatch": 1, "squeue": 2, "scontrol": 1, "scancel": 1}
