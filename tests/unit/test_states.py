"""Engine state tables: every engine state maps as documented."""

from __future__ import annotations

from typing import Any

import pytest

from pman.backends.docker import DOCKER_STATES, job_info_from_inspect, parse_engine_time
from pman.models import JobState


def inspect(status: str, **state: Any) -> dict[str, Any]:
    st = {
        "Status": status,
        "ExitCode": 0,
        "OOMKilled": False,
        "Error": "",
        "StartedAt": "2026-11-23T10:00:00.123456789Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }
    st.update(state)
    return {
        "Name": "/job",
        "Created": "2026-11-23T09:59:59.5Z",
        "State": st,
        "Config": {
            "Image": "img:latest",
            "Entrypoint": ["copyplugin"],
            "Cmd": ["/share/outgoing"],
            "Labels": {
                "org.chrisproject.pman.image": "img",
                "org.chrisproject.pman.fingerprint": "f",
            },
        },
        "HostConfig": {"Memory": 64 * 1024 * 1024},
    }


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("created", JobState.QUEUED),
        ("running", JobState.RUNNING),
        ("paused", JobState.RUNNING),
        ("restarting", JobState.RUNNING),
        ("dead", JobState.SYSTEM_ERROR),
        ("removing", JobState.UNKNOWN),
        ("configured", JobState.QUEUED),
        ("weird-new-state", JobState.UNKNOWN),
    ],
)
def test_docker_status_table(status: str, state: JobState) -> None:
    # created just now: a container not started a minute after its creation
    # is a system error (test_a_container_never_started_ends_as_a_system_error)
    from datetime import UTC, datetime

    just_created = inspect(status) | {"Created": datetime.now(UTC).isoformat()}
    assert job_info_from_inspect(just_created).state is state


def test_docker_exit_codes_and_oom() -> None:
    ok = job_info_from_inspect(inspect("exited", FinishedAt="2026-11-23T10:00:01Z"))
    assert (ok.state, ok.exit_code, ok.message) == (JobState.SUCCEEDED, 0, "exited with code 0")
    assert ok.finished_at is not None and ok.finished_at.tzinfo is not None
    assert ok.image == "img" and ok.command == ["copyplugin", "/share/outgoing"]

    bad = job_info_from_inspect(inspect("exited", ExitCode=3))
    assert (bad.state, bad.exit_code, bad.reason) == (JobState.FAILED, 3, "exit_code")

    oom = job_info_from_inspect(inspect("exited", ExitCode=137, OOMKilled=True))
    assert (oom.state, oom.reason) == (JobState.FAILED, "oom_killed")
    assert "out of memory" in oom.message and "64 MiB" in oom.message

    # An engine that does not report OOM kills (Podman on cgroup v1): a SIGKILL
    # under a memory limit is called a probable OOM kill, never a plain exit.
    killed = job_info_from_inspect(inspect("exited", ExitCode=137), oom_reported=False)
    assert (killed.state, killed.reason) == (JobState.FAILED, "killed")
    assert "out of memory" in killed.message
    plain = job_info_from_inspect(inspect("exited", ExitCode=137))
    assert "out of memory" not in plain.message

    never = job_info_from_inspect(
        inspect("exited", ExitCode=127, Error="exec failed", StartedAt="0001-01-01T00:00:00Z")
    )
    assert never.state is JobState.SYSTEM_ERROR


def test_every_docker_state_has_a_mapping_or_a_rule() -> None:
    for status in DOCKER_STATES:
        state = job_info_from_inspect(inspect(status)).state
        # a container being removed has not said how it ended: the tracker waits
        assert (state is JobState.UNKNOWN) == (status == "removing"), status


def test_engine_times() -> None:
    t = parse_engine_time("2026-11-23T10:00:00.123456789Z")
    assert t is not None and t.microsecond == 123456 and t.utcoffset() is not None
    assert parse_engine_time("0001-01-01T00:00:00Z") is None
    assert parse_engine_time("2026-11-23T10:00:00.5+02:00").utcoffset().total_seconds() == 7200  # type: ignore[union-attr]


def test_demultiplex_log_frames() -> None:
    from pman.backends.docker import demultiplex

    def frame(stream: int, payload: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    data = frame(1, b"out 1\n") + frame(2, b"err\n") + frame(1, b"out 2\n")
    assert demultiplex(data) == b"out 1\nerr\nout 2\n"
    assert demultiplex(b"") == b""
    assert demultiplex(b"plain tty text\n") == b"plain tty text\n"


def test_a_container_never_started_ends_as_a_system_error() -> None:
    """Found by scripts/faults/pman_sigkill.py: pman killed between creating a
    container and starting it left the container "created" and its job
    "notstarted" for ever. Past a minute such a container is a system error."""
    from datetime import UTC, datetime, timedelta

    from pman.backends.docker import job_info_from_summary

    old = datetime.now(UTC) - timedelta(seconds=61)
    young = datetime.now(UTC) - timedelta(seconds=5)
    for status in ("created", "configured"):
        stale = job_info_from_inspect(inspect(status) | {"Created": old.isoformat()})
        assert (stale.state, stale.reason) == (JobState.SYSTEM_ERROR, "never_started")
        assert "never started" in stale.message
        fresh = job_info_from_inspect(inspect(status) | {"Created": young.isoformat()})
        assert fresh.state is JobState.QUEUED
    summary = {"Names": ["/j"], "State": "created", "Status": "Created", "Labels": {}}
    assert job_info_from_summary(summary | {"Created": int(old.timestamp())}).state is (
        JobState.SYSTEM_ERROR
    )
    assert job_info_from_summary(summary | {"Created": int(young.timestamp())}).state is (
        JobState.QUEUED
    )
    # a running or finished container is never called that, however old
    running = job_info_from_inspect(inspect("running") | {"Created": old.isoformat()})
    assert running.state is JobState.RUNNING
