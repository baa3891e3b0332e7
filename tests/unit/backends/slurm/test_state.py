"""The slurm backend's states without a cluster: the state table, exit
statuses, a job's state over its array tasks and from its status files, times."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from pman.backends.slurm.client import QueueRow
from pman.backends.slurm.comment import encode_comment
from pman.backends.slurm.state import (
    SLURM_STATES,
    WorkerFiles,
    decode_exit_status,
    job_info,
    job_state,
    listed_info,
    pman_jobs,
    slurm_time,
    state_from_files,
    state_of,
    status_file,
    worker_files,
)
from pman.labels import LABEL_AUID, LABEL_FINGERPRINT, LABEL_INSTANCE, LABEL_MANAGED
from pman.models import JobInfo, JobState
from tests.unit.backends.slurm.helpers import row

# ---------------------------------------------------------------- state table


def test_state_table_covers_every_documented_state() -> None:
    documented = {
        "BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE",
        "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING",
        "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED",
        "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT",
    }  # fmt: skip
    assert set(SLURM_STATES) == documented
    assert SLURM_STATES["COMPLETED"][0] is JobState.SUCCEEDED
    assert SLURM_STATES["FAILED"][0] is JobState.FAILED
    assert SLURM_STATES["TIMEOUT"][0] is JobState.FAILED
    assert SLURM_STATES["OUT_OF_MEMORY"][0] is JobState.FAILED
    assert SLURM_STATES["CANCELLED"][0] is JobState.CANCELLED
    assert SLURM_STATES["NODE_FAIL"][0] is JobState.SYSTEM_ERROR
    assert SLURM_STATES["PENDING"][0] is JobState.QUEUED
    # still finishing: not done until its processes (and container) are gone
    assert SLURM_STATES["COMPLETING"][0] is JobState.RUNNING


def test_state_names_with_flags_and_unknown_states() -> None:
    assert state_of("CANCELLED by 0")[0] is JobState.CANCELLED
    assert state_of("running")[0] is JobState.RUNNING
    assert state_of("LAUNCH_FAILED_NEW")[0] is JobState.UNKNOWN


def test_exit_status_is_a_raw_wait_status() -> None:
    assert decode_exit_status(0) == (0, 0)
    assert decode_exit_status(256) == (1, 0)
    assert decode_exit_status(3 << 8) == (3, 0)
    assert decode_exit_status(15) == (0, 15)  # killed by SIGTERM
    assert decode_exit_status(253) == (0, 125)  # SLURM's OOM marker 0:125
    assert decode_exit_status(None) == (None, 0)


# ---------------------------------------------------------------- job state


@pytest.mark.parametrize(
    ("rows", "workers", "state", "reason", "message", "code"),
    [
        ([row("PENDING", reason="Priority")], 1, JobState.QUEUED, "", "pending: Priority", None),
        ([row("CONFIGURING")], 1, JobState.QUEUED, "", "waiting for its nodes to be ready", None),
        ([row("RUNNING")], 1, JobState.RUNNING, "", "running", None),
        ([row("COMPLETING", status=0)], 1, JobState.RUNNING, "", "running", None),
        ([row("COMPLETED", status=0)], 1, JobState.SUCCEEDED, "", "exited with code 0", 0),
        ([row("FAILED", status=3 << 8)], 1, JobState.FAILED, "exit_code", "exited with code 3", 3),
        (
            [row("TIMEOUT", status=15)],
            1,
            JobState.FAILED,
            "timeout",
            "killed: time limit of 30 min reached (SLURM state TIMEOUT)",
            143,
        ),
        (
            [row("OUT_OF_MEMORY", status=253)],
            1,
            JobState.FAILED,
            "oom_killed",
            "killed: out of memory (memory_limit 64 MiB) (SLURM state OUT_OF_MEMORY)",
            None,
        ),
        (
            [row("CANCELLED", status=15)],
            1,
            JobState.CANCELLED,
            "cancelled",
            "cancelled (scancel)",
            143,
        ),
        (
            [row("NODE_FAIL")],
            1,
            JobState.SYSTEM_ERROR,
            "node_fail",
            "its node failed (SLURM state NODE_FAIL)",
            None,
        ),
        ([row("PREEMPTED")], 1, JobState.SYSTEM_ERROR, "preempted", None, None),
        ([row("SPECIAL_EXIT", status=7 << 8)], 1, JobState.FAILED, "exit_code", None, 7),
        # arrays: decided once every worker ended
        ([row("PENDING", 1), row("PENDING", 2)], 2, JobState.QUEUED, "", None, None),
        (
            [row("RUNNING", 1), row("PENDING", 2)],
            2,
            JobState.RUNNING,
            "",
            "1 of 2 workers running",
            None,
        ),
        ([row("FAILED", 1, 256), row("RUNNING", 2)], 2, JobState.RUNNING, "", None, None),
        # the active-only view leaves out worker 1, which has ended
        ([row("PENDING", 2)], 2, JobState.RUNNING, "", None, None),
        (
            [row("COMPLETED", 1, 0), row("FAILED", 2, 5 << 8)],
            2,
            JobState.FAILED,
            "exit_code",
            "worker 2: exited with code 5",
            5,
        ),
        (
            [row("COMPLETED", 1, 0), row("COMPLETED", 2, 0)],
            2,
            JobState.SUCCEEDED,
            "",
            "all 2 workers exited with 0",
            0,
        ),
        (
            [row("CANCELLED", 1, 15), row("NODE_FAIL", 2)],
            2,
            JobState.SYSTEM_ERROR,
            "node_fail",
            None,
            None,
        ),
        ([row("NEW_STATE")], 1, JobState.UNKNOWN, "unknown_status", None, None),
    ],
)
def test_job_state_over_tasks(
    rows: list[QueueRow],
    workers: int,
    state: JobState,
    reason: str,
    message: str | None,
    code: int | None,
) -> None:
    out = job_state(rows, workers, 64, 30)
    assert (out.state, out.reason) == (state, reason), out
    if message is not None:
        assert out.message == message
    if state.finished:
        assert out.exit_code == code


def test_what_the_script_recorded_refines_the_state() -> None:
    # the command's own exit code beats SLURM's view of the script
    out = job_state([row("OUT_OF_MEMORY", status=253)], 1, 32, 30, {1: WorkerFiles(exit_code=137)})
    assert out.exit_code == 137
    assert out.message.startswith("killed: out of memory (memory_limit 32 MiB), exit code 137")
    # docker's OOM flag
    out = job_state([row("FAILED", status=137 << 8)], 1, 32, 30, {1: WorkerFiles(137, oom=True)})
    assert (out.state, out.reason) == (JobState.FAILED, "oom_killed")
    assert out.message == "killed: out of memory (memory_limit 32 MiB), exit code 137"
    # the runtime could not start the job: a system error with its words
    files = {1: WorkerFiles(125, error="docker could not start the container")}
    out = job_state([row("FAILED", status=125 << 8)], 1, 32, 30, files)
    assert (out.state, out.reason) == (JobState.SYSTEM_ERROR, "start_failed")
    assert out.message == "docker could not start the container"


def test_state_of_a_job_slurm_forgot() -> None:
    ok = state_from_files({1: WorkerFiles(0), 2: WorkerFiles(0)}, 2, 64)
    assert ok.state is JobState.SUCCEEDED
    bad = state_from_files({1: WorkerFiles(0), 2: WorkerFiles(4)}, 2, 64)
    assert (bad.state, bad.exit_code) == (JobState.FAILED, 4)
    assert bad.message == "worker 2: exited with code 4"
    gone = state_from_files({1: WorkerFiles(0)}, 2, 64)
    assert (gone.state, gone.reason) == (JobState.SYSTEM_ERROR, "vanished")


# ---------------------------------------------------------------- times


def _old_parse_slurm_time(text: str) -> datetime | None:
    """parse_slurm_time as the slurm backend had it before it used the kit's."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is None else parsed


@pytest.mark.parametrize(
    "text",
    ["N/A", "Unknown", "NONE", "None", "(null)", "", " ", "2026-11-26T12:00:01",
     " 2026-11-26T12:00:01\n", "2026-11-26T12:00:01+02:00", "2026-11-26T12:00:01.123456+00:00",
     "2026-11-26", "not a time"],
)  # fmt: skip
def test_slurm_times_as_before(text: str) -> None:
    assert slurm_time(text) == _old_parse_slurm_time(text)
    parsed = slurm_time(text)
    assert parsed is None or parsed.tzinfo is not None


def test_a_naive_slurm_time_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert slurm_time("2026-07-01T12:00:00") == datetime(2026, 7, 1, 10, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


# ---------------------------------------------------------------- status files


def test_status_files_by_name() -> None:
    assert status_file("exit.1") == ("exit", 1)
    assert status_file("oom.12") == ("oom", 12)
    assert status_file("error.3") == ("error", 3)
    for other in ("log", "job.sh", "meta.json", ".exit.1", "exit.", "exit.x", "exit"):
        assert status_file(other) is None


def test_worker_files_from_their_texts() -> None:
    files = worker_files(
        {
            ("exit", 1): "0\n",
            ("exit", 2): "-1\n",
            ("oom", 2): "OOMKilled\n",
            ("exit", 3): "garbage",
            ("error", 3): "\n",
            ("error", 4): "apptainer is not installed on node n1\n",
        }
    )
    assert files == {
        1: WorkerFiles(0),
        2: WorkerFiles(-1, oom=True),
        3: WorkerFiles(None, error="the job could not start"),
        4: WorkerFiles(error="apptainer is not installed on node n1"),
    }


# ---------------------------------------------------------------- squeue's list


def test_pman_jobs_are_the_latest_submission_of_each_name() -> None:
    mine = encode_comment("inst", "f" * 32, "chris", 2)
    rows = [
        row("CANCELLED", job_id="90", array_job_id="90", comment=mine),
        row("RUNNING", 1, comment=mine),
        row("PENDING", 2, comment=mine),
        row("RUNNING", name="not-pman", job_id="7", array_job_id="7", comment="(null)"),
        row("COMPLETED", status=0, name="job-2", job_id="95", array_job_id="95", comment=mine),
    ]
    jobs = pman_jobs(rows)
    found = [(j.name, j.job_id, len(j.rows)) for j in jobs]
    assert found == [("job-1", "100", 2), ("job-2", "95", 1)]
    info = listed_info(jobs[0], 30)
    assert (info.state, info.message, info.native_id) == (
        JobState.RUNNING,
        "1 of 2 workers running",
        "100",
    )
    assert info.labels == {
        LABEL_MANAGED: "true",
        LABEL_INSTANCE: "inst",
        LABEL_FINGERPRINT: "f" * 32,
        LABEL_AUID: "chris",
    }
    assert info.created_at == slurm_time("2026-11-26T12:00:00")
    assert info.started_at == slurm_time("2026-11-26T12:00:01")
    done = listed_info(jobs[1], 30)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0)


def test_job_info_times_over_tasks() -> None:
    base = JobInfo(name="job-1", state=JobState.QUEUED)
    rows = [
        row("COMPLETED", 1, 0, start_time="2026-11-26T12:00:05", end_time="2026-11-26T12:01:00"),
        row("COMPLETED", 2, 0, start_time="2026-11-26T12:00:03", end_time="2026-11-26T12:02:00"),
    ]
    info = job_info(base, rows, job_state(rows, 2, 64, 30))
    assert info.state is JobState.SUCCEEDED and info.exit_code == 0
    assert info.started_at == slurm_time("2026-11-26T12:00:03")
    assert info.finished_at == slurm_time("2026-11-26T12:02:00")
    running = [row("RUNNING", 1), row("RUNNING", 2)]
    info = job_info(base, running, job_state(running, 2, 64, 30))
    assert info.finished_at is None and info.exit_code is None
