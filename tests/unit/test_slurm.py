"""The slurm backend without a cluster: the state table, squeue parsing, job
state over array tasks, sbatch options and batch scripts, settings, errors."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pman.backends import load_backend
from pman.backends.slurm import (
    SLURM_STATES,
    SlurmBackend,
    WorkerFiles,
    apptainer_image,
    build_script,
    decode_exit_status,
    encode_comment,
    job_state,
    parse_comment,
    sbatch_options,
    state_from_files,
    state_of,
    to_host,
)
from pman.backends.slurm_client import (
    QueueRow,
    SlurmClient,
    SlurmCommandError,
    parse_sbatch,
    parse_sinfo,
    parse_squeue,
    squeue_format,
)
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
from pman.models import JobSpec, JobState, Mounts, Resources
from pman.settings import Settings, load_settings

# ---------------------------------------------------------------- fixtures


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


# ---------------------------------------------------------------- parsing

# real output of `squeue --noheader --array --me --Format=<squeue_format()>`
SQUEUE_OUT = """\
3|1|1|FAILED|256|2026-11-26T12:32:28|2026-11-26T12:32:28|2026-11-26T12:32:28|NonZeroExitCode|my.job-1|pman;instance=abc;fingerprint=123;workers=2;auid=ch%20ris|
1|1|2|FAILED|512|2026-11-26T12:32:28|2026-11-26T12:32:28|2026-11-26T12:32:28|NonZeroExitCode|my.job-1|pman;instance=abc;fingerprint=123;workers=2;auid=ch%20ris|
2|2|N/A|RUNNING|0|2026-11-26T12:32:28|2026-11-26T12:32:28|NONE|None|sleepy|(null)|
weird|line
"""


def test_parse_squeue() -> None:
    rows = parse_squeue(SQUEUE_OUT)
    assert len(rows) == 3
    first = rows[0]
    assert (first.job_id, first.array_job_id, first.array_task_id) == ("3", "1", 1)
    assert (first.state, first.exit_status, first.name) == ("FAILED", 256, "my.job-1")
    assert parse_comment(first.comment) == {
        "instance": "abc",
        "fingerprint": "123",
        "workers": "2",
        "auid": "ch ris",
    }
    assert rows[2].array_task_id is None and parse_comment(rows[2].comment) is None


def test_squeue_format_asks_every_field_in_full() -> None:
    fmt = squeue_format()
    assert fmt.startswith("JobID:|,ArrayJobID:|,")
    assert "exit_code:|" in fmt and fmt.endswith("Comment:|")


def test_parse_sbatch_and_sinfo() -> None:
    assert parse_sbatch("42\n") == "42"
    assert parse_sbatch("42;cluster\n") == "42"
    with pytest.raises(ValueError):
        parse_sbatch("sbatch: error\n")
    assert parse_sinfo("2|24105|(null)\n8+|64000|gpu:a100:4(S:0)\n") == [
        (2, 24105, "(null)"),
        (8, 64000, "gpu:a100:4(S:0)"),
    ]


def test_comment_round_trip_with_awkward_auid() -> None:
    comment = encode_comment("i1", "fp", "a user|with;odd=chars", 3)
    assert " " not in comment and "|" not in comment
    assert parse_comment(comment) == {
        "instance": "i1",
        "fingerprint": "fp",
        "workers": "3",
        "auid": "a user|with;odd=chars",
    }


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


# ---------------------------------------------------------------- sbatch and the script


def test_sbatch_options(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        SLURM_PARTITION="gpu",
        SLURM_ACCOUNT="chris-lab",
        SLURM_QOS="normal",
        SLURM_EXTRA_OPTIONS="--constraint=intel --reservation 'r 1'",
        TIMELIMIT_MINUTES="45",
    )
    jobdir = tmp_path / "jobs" / "job-1"
    opts = sbatch_options(spec(tmp_path, gpu_limit=2, number_of_workers=3), s, jobdir)
    assert "--job-name=job-1" in opts
    assert f"--output={jobdir}/log" in opts and "--open-mode=append" in opts
    assert "--export=NONE" in opts and "--no-requeue" in opts
    assert "--time=45" in opts
    assert "--cpus-per-task=2" in opts  # 1500 millicores, rounded up
    assert "--mem=300M" in opts
    assert "--gres=gpu:2" in opts
    assert "--array=1-3" in opts
    assert opts[-6:] == [
        "--partition=gpu",
        "--account=chris-lab",
        "--qos=normal",
        "--constraint=intel",
        "--reservation",
        "r 1",
    ]
    comment = next(o for o in opts if o.startswith("--comment="))
    assert parse_comment(comment.split("=", 1)[1]) == {
        "instance": s.instance,
        "fingerprint": "f" * 32,
        "workers": "3",
        "auid": "chris",
    }
    one = sbatch_options(spec(tmp_path, cpu_limit=100), s, jobdir)
    assert "--cpus-per-task=1" in one
    assert not any(o.startswith(("--array", "--gres")) for o in one)
    lax = sbatch_options(spec(tmp_path), settings(tmp_path, IGNORE_LIMITS="yes"), jobdir)
    assert not any(o.startswith(("--mem", "--cpus-per-task")) for o in lax)


def bash_syntax_ok(script: str, tmp_path: Path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_docker_script(tmp_path: Path) -> None:
    s = settings(tmp_path, JOB_LABELS="team=x", SHM_SIZE="64", CONTAINER_USER="1000:1001")
    sp = replace(spec(tmp_path), uid=1000, gid=1001)
    script = build_script(sp, s, tmp_path / "jobs" / "job-1")
    bash_syntax_ok(script, tmp_path)
    sb = tmp_path / "sb"
    assert f"-v {sb}/key/in:/share/incoming:ro" in script
    assert f"-v {sb}/key/out:/share/outgoing:rw" in script
    assert "--memory=300m" in script and "--memory-swap=300m" in script
    assert "--cpus=1.5" in script and "--shm-size=64m" in script
    assert "--user=1000:1001" in script and "--label team=x" in script
    assert "-e 'GREETING=hello world'" in script
    assert "-e PMAN_WORKER_INDEX" in script
    assert "--entrypoint simpledsapp" in script
    # the request's own /share paths stay: the container sees them
    assert "'it'\"'\"'s' /share/incoming /share/outgoing" in script
    assert 'container=job-1-"$SLURM_JOB_ID"' in script
    assert "trap on_signal TERM" in script and 'rm -f "$container"' in script
    assert "org.chrisproject.pman=" not in script  # never mistaken for a docker backend job


def test_podman_script_with_gpus(tmp_path: Path) -> None:
    s = settings(tmp_path, SLURM_CONTAINER_RUNTIME="podman")
    script = build_script(spec(tmp_path, gpu_limit=1), s, tmp_path / "j")
    bash_syntax_ok(script, tmp_path)
    assert "engine=podman" in script and "nvidia.com/gpu=$i" in script
    assert 'rm -f --time 0 "$container"' in script  # not podman's 10 s stop timeout
    docker = build_script(spec(tmp_path, gpu_limit=1), settings(tmp_path), tmp_path / "j")
    assert "--gpus" in docker and "CUDA_VISIBLE_DEVICES" in docker


def test_apptainer_script(tmp_path: Path) -> None:
    s = settings(tmp_path, SLURM_CONTAINER_RUNTIME="apptainer")
    script = build_script(spec(tmp_path, gpu_limit=1), s, tmp_path / "j")
    bash_syntax_ok(script, tmp_path)
    assert "apptainer exec \\\n  --containall \\\n  --cleanenv" in script
    assert f"--bind {tmp_path}/sb/key/in:/share/incoming:ro" in script
    assert "  --nv \\\n" in script
    assert "docker://fnndsc/pl-simpledsapp:2.1" in script
    assert "export APPTAINERENV_GREETING='hello world'" in script
    assert 'export APPTAINERENV_PMAN_WORKER_INDEX="$PMAN_WORKER_INDEX"' in script
    sing = build_script(
        spec(tmp_path), settings(tmp_path, SLURM_CONTAINER_RUNTIME="singularity"), tmp_path
    )
    assert "singularity exec" in sing and "SINGULARITYENV_GREETING" in sing
    bad = replace(spec(tmp_path), env=["NOT-A-NAME=1"])
    with pytest.raises(UnsupportedOption) as e:
        build_script(bad, s, tmp_path)
    assert "env" in e.value.fields
    assert apptainer_image("/images/x.sif") == "/images/x.sif"
    assert apptainer_image("oras://reg/x:1") == "oras://reg/x:1"
    assert apptainer_image("fnndsc/x") == "docker://fnndsc/x"


def test_none_script_rewrites_container_paths(tmp_path: Path) -> None:
    s = settings(tmp_path, SLURM_CONTAINER_RUNTIME="none")
    script = build_script(spec(tmp_path), s, tmp_path / "j")
    bash_syntax_ok(script, tmp_path)
    sb = tmp_path / "sb"
    assert f"{sb}/key/in {sb}/key/out </dev/null &" in script
    assert f"WHERE={sb}/key/out/x" in script
    assert f"PMAN_OUTGOING={sb}/key/out" in script
    assert "/share/" not in script


def test_to_host() -> None:
    args = ("/in", "/out")
    assert to_host("/share/incoming", *args) == "/in"
    assert to_host("/share/outgoing/a/b", *args) == "/out/a/b"
    assert to_host("--out=/share/outgoing", *args) == "--out=/out"
    assert to_host("/share/outgoingx", *args) == "/share/outgoingx"
    assert to_host("/x/share/incoming", *args) == "/x/share/incoming"


def test_docker_refuses_a_colon_in_a_bind_source(tmp_path: Path) -> None:
    sp = spec(tmp_path)
    sp = replace(sp, mounts=replace(sp.mounts, output_host=tmp_path / "a:b"))
    with pytest.raises(InvalidJobSpec) as e:
        build_script(sp, settings(tmp_path), tmp_path)
    assert "output_dir" in e.value.fields


# ---------------------------------------------------------------- settings


def test_slurm_settings_defaults(tmp_path: Path) -> None:
    s = load_settings({"CONTAINER_ENV": "slurm", "STOREBASE": "/sb", "PMAN_DATA_DIR": "/d"})
    assert s.slurm_job_dir == Path("/d/slurm/jobs")
    assert s.slurm_container_runtime == "apptainer"
    assert s.slurm_partition is None and s.slurm_extra_options == ()
    assert s.slurm_bin_dir is None and s.slurm_conf is None


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
    assert s.container_user.uid is not None
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


# ---------------------------------------------------------------- the command helper


def fake_tools(tmp_path: Path, **scripts: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\n" + body)
        tool.chmod(0o755)
    return bin_dir


def test_command_helper_raises_with_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = fake_tools(
        tmp_path,
        squeue='echo "partial out"; echo "squeue: error: boom" >&2; exit 3\n',
        sinfo='echo "$SBATCH_PARTITION|${SQUEUE_FORMAT:-unset}|$SLURM_CONF"\n',
        sleepy="exec sleep 30\n",  # exec: killed at the timeout, its pipes with it
    )
    monkeypatch.setenv("SBATCH_PARTITION", "leaked")
    monkeypatch.setenv("SQUEUE_FORMAT", "%i")
    # long enough for a loaded machine to run the quick tools, short for the sleepy one
    client = SlurmClient(bin_dir=bin_dir, timeout=3, conf="/etc/other.conf")
    with pytest.raises(SlurmCommandError) as e:
        client.run(["squeue", "--me"])
    err = e.value
    assert err.argv == (str(bin_dir / "squeue"), "--me")
    assert (err.returncode, err.stdout, err.stderr) == (3, "partial out\n", "squeue: error: boom\n")
    assert "exited with code 3: squeue: error: boom" in str(err)
    # the tools' own variables are never passed on; SLURM_CONF is the setting
    assert client.run(["sinfo"]).stdout == "|unset|/etc/other.conf\n"
    with pytest.raises(SlurmCommandError) as e:
        client.run(["sleepy"])
    assert e.value.timed_out
    with pytest.raises(SlurmCommandError) as e:
        client.run(["no-such-tool"])
    assert e.value.returncode is None
    assert client.calls == {"squeue": 1, "sinfo": 1, "sleepy": 1, "no-such-tool": 1}


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
    s = settings(tmp_path)
    backend = SlurmBackend(FakeClient(error=error), s)
    with pytest.raises(expected) as e:
        backend.submit(spec(tmp_path, memory_limit=10**8))
    assert type(e.value) is expected
    if fields is not None:
        assert set(e.value.fields) == fields
    assert not (s.slurm_job_dir / "job-1").exists()  # a refused job leaves nothing


def test_submit_get_list_delete_with_fake_tools(tmp_path: Path) -> None:
    s = settings(tmp_path)
    client = FakeClient()
    backend = SlurmBackend(client, s)
    info = backend.submit(spec(tmp_path))
    assert (info.state, info.native_id) == (JobState.QUEUED, "100")
    jobdir = s.slurm_job_dir / "job-1"
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
    s = settings(tmp_path)
    client = FakeClient()
    backend = SlurmBackend(client, s)
    backend.submit(spec(tmp_path))
    client.error = err("scancel: error: Kill job error on job id 100: Job/step already "
                       "completing or completed")  # fmt: skip
    backend.delete("job-1")
    assert not (s.slurm_job_dir / "job-1").exists()


def test_a_job_slurm_forgot_is_decided_by_its_files(tmp_path: Path) -> None:
    backend = SlurmBackend(FakeClient(), settings(tmp_path))
    backend.submit(spec(tmp_path))
    jobdir = backend.jobs_dir / "job-1"
    assert backend.get("job-1").reason == "vanished"
    (jobdir / "exit.1").write_text("2\n")
    got = backend.get("job-1")
    assert (got.state, got.exit_code) == (JobState.FAILED, 2)
