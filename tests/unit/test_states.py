"""Engine state tables: every engine state maps as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pman.backends.local import LOCAL_STATES, LocalBackend, tail_lines
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
    from pman.backends import local

    backend = _job(tmp_path, runner={"pid": 12345, "pgid": 12345})
    result = {"exit_code": 0, "finished_at": "2020-01-01T00:00:01+00:00"}

    def ends_now(pid: int, jobdir: Path) -> bool:
        (jobdir / "result.json").write_text(json.dumps(result))
        return False

    monkeypatch.setattr(local, "_pid_runs", ends_now)
    assert backend.get("j").state is JobState.SUCCEEDED


def test_tail_lines(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_text("".join(f"{i}\n" for i in range(100000)))
    assert tail_lines(p, 3) == "99997\n99998\n99999\n"
    assert tail_lines(p, 0) == ""
    assert tail_lines(tmp_path / "missing", 5) == ""
    short = tmp_path / "short"
    short.write_text("a\nb")
    assert tail_lines(short, 10) == "a\nb"


def test_local_list_active_skips_finished_jobs(tmp_path: Path) -> None:
    backend = _job(tmp_path, result={"exit_code": 0, "finished_at": "2020-01-01T00:00:01+00:00"})
    assert [i.name for i in backend.list()] == ["j"]
    assert backend.list_active() == []
