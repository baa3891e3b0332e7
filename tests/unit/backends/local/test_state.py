"""A local job's state from the records in its folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pman.backends.local import LocalBackend
from pman.backends.local.state import LOCAL_STATES, job_info
from pman.models import JobState


def _job(tmp_path: Path, **files: dict[str, Any]) -> LocalBackend:
    jobdir = tmp_path / "jobs" / "j"
    jobdir.mkdir(parents=True)
    spec = {"image": "i", "command": ["c"], "created_at": "2020-01-01T00:00:00+00:00"}
    (jobdir / "spec.json").write_text(json.dumps(spec))
    for name, data in files.items():
        (jobdir / f"{name}.json").write_text(json.dumps(data))
    return LocalBackend(tmp_path / "jobs", tmp_path)


@pytest.mark.parametrize(
    ("files", "state"),
    [
        (
            {"result": {"exit_code": 0, "finished_at": "2020-01-01T00:00:01+00:00"}},
            JobState.SUCCEEDED,
        ),
        ({"result": {"exit_code": 2, "finished_at": "2020-01-01T00:00:01+00:00"}}, JobState.FAILED),
        (
            {"result": {"exit_code": 137, "signal": 9, "finished_at": "2020-01-01T00:00:01+00:00"}},
            JobState.FAILED,
        ),
        (
            {
                "result": {
                    "exit_code": 127,
                    "error": "boom",
                    "finished_at": "2020-01-01T00:00:01+00:00",
                }
            },
            JobState.SYSTEM_ERROR,
        ),
        ({"runner": {"pid": 999999999}}, JobState.SYSTEM_ERROR),  # supervisor gone
        ({}, JobState.SYSTEM_ERROR),  # never started, long ago
    ],
)
def test_local_states(tmp_path: Path, files: dict[str, Any], state: JobState) -> None:
    info = _job(tmp_path, **files).get("j")
    assert info.state is state
    assert set(LOCAL_STATES.values()) >= {state}


def test_a_supervisor_ending_while_its_job_is_read_is_not_vanished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor writes its result, then ends: seen ending, its result is
    there to read, so the job is never taken for vanished."""
    from pman.backends.local import adapter as local

    backend = _job(tmp_path, runner={"pid": 12345, "pgid": 12345})
    result = {"exit_code": 0, "finished_at": "2020-01-01T00:00:01+00:00"}

    def ends_now(pid: int, jobdir: Path) -> bool:
        (jobdir / "result.json").write_text(json.dumps(result))
        return False

    monkeypatch.setattr(local, "pid_runs", ends_now)
    assert backend.get("j").state is JobState.SUCCEEDED


def test_local_list_active_skips_finished_jobs(tmp_path: Path) -> None:
    backend = _job(tmp_path, result={"exit_code": 0, "finished_at": "2020-01-01T00:00:01+00:00"})
    assert [i.name for i in backend.list()] == ["j"]
    assert backend.list_active() == []


SPEC = {"image": "i", "command": ["c"], "created_at": "2020-01-01T00:00:00+00:00"}
CREATED = 1577836800.0  # SPEC's created_at
END = "2020-01-01T00:00:01+00:00"


@pytest.mark.parametrize(
    ("records", "state", "reason", "message"),
    [
        ({"result": {"exit_code": 0, "finished_at": END}}, JobState.SUCCEEDED, "", "exited"),
        ({"result": {"exit_code": 2, "finished_at": END}}, JobState.FAILED, "exit_code", "code 2"),
        (
            {"result": {"exit_code": 137, "signal": 9, "finished_at": END}},
            JobState.FAILED,
            "signalled",
            "killed by SIGKILL",
        ),
        (
            {"result": {"exit_code": 137, "oom": True, "finished_at": END}},
            JobState.FAILED,
            "oom_killed",
            "out of memory",
        ),
        (
            {"result": {"exit_code": 127, "error": "boom", "finished_at": END}},
            JobState.SYSTEM_ERROR,
            "start_failed",
            "boom",
        ),
        ({"runner": {"pid": 1}, "alive": True}, JobState.QUEUED, "", "starting"),
        (
            {"runner": {"pid": 1}, "alive": True, "started": {"started_at": END}},
            JobState.RUNNING,
            "",
            "running",
        ),
        # no supervisor record yet: waiting for it a minute, then vanished
        ({"now": CREATED + 59}, JobState.QUEUED, "", "waiting for the supervisor"),
        ({"now": CREATED + 61}, JobState.SYSTEM_ERROR, "supervisor_lost", "ended without"),
        ({"runner": {"pid": 1}}, JobState.SYSTEM_ERROR, "supervisor_lost", "ended without"),
        # cancelled: however it ended, once it has
        (
            {"result": {"exit_code": 143, "finished_at": END}, "cancelled": True},
            JobState.CANCELLED,
            "cancelled",
            "cancelled",
        ),
        ({"runner": {"pid": 1}, "alive": True, "cancelled": True}, JobState.QUEUED, "", "starting"),
    ],
)
def test_job_info_from_records(
    records: dict[str, Any], state: JobState, reason: str, message: str
) -> None:
    args: dict[str, Any] = {
        "runner": None,
        "alive": False,
        "started": None,
        "result": None,
        "cancelled": False,
        "now": CREATED + 3600,
        **records,
    }
    info = job_info("j", SPEC, **args)
    assert (info.state, info.reason) == (state, reason)
    assert message in info.message
    assert info.state in LOCAL_STATES.values()
    assert (info.finished_at is not None) == (args["result"] is not None)
