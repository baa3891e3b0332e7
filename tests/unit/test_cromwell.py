"""The cromwell backend without a server: the WDL and inputs it generates
(checked with miniwdl's parser), the state tables, metadata parsing, log
tails, the calls it makes and its error conversion."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from pman.backends import load_backend
from pman.backends.cromwell import (
    CALL_STATES,
    WORKFLOW_OPTIONS,
    WORKFLOW_STATES,
    WORKFLOW_WDL,
    CromwellBackend,
    build_script,
    cromwell_cpu,
    failure_messages,
    info_from_metadata,
    info_from_query,
    job_outcome,
    tail_lines,
    workflow_inputs,
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
from pman.settings import load_settings

URL = "http://cromwell.example:8000"
WID = "0b3b1c3e-1d7a-4f3e-9a43-6f1d3f0a0a0a"
MANAGED = "org.chrisproject.pman"
JID = "org.chrisproject.pman.jid"


def settings(tmp_path: Path, **env: str) -> Any:
    return load_settings(
        {
            "CONTAINER_ENV": "cromwell",
            "CROMWELL_URL": URL,
            "STOREBASE": str(tmp_path),
            "PMAN_DATA_DIR": str(tmp_path / "data"),
            **env,
        }
    )


def spec(tmp_path: Path, workers: int = 1, env: list[str] | None = None, **kw: Any) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="localhost/img:1",
        command=[
            "copyplugin",
            "--say",
            "it's $HOME `x`\nnext",
            "/share/incoming",
            "/share/outgoing",
        ],
        env=["A=1", "QUOTED=a 'b' \"c\" $D"] if env is None else env,
        resources=Resources(workers, 1500, 64, 0),
        mounts=Mounts("key/in", "key/out", tmp_path / "key/in", tmp_path / "key/out"),
        plugin_type="ds",
        auid="chris",
        fingerprint="f",
        labels={MANAGED: "true", JID: "job-1", "team": "x"},
        **kw,
    )


# ------------------------------------------------------------------ the WDL


def test_the_wdl_and_its_inputs_pass_miniwdls_checks(tmp_path: Path) -> None:
    WDL = pytest.importorskip("WDL")
    doc = WDL.parse_document(WORKFLOW_WDL)
    doc.typecheck()
    assert doc.workflow is not None and doc.workflow.name == "pman"
    assert [t.name for t in doc.tasks] == ["plugin"]
    inputs = workflow_inputs(spec(tmp_path, workers=2), "/sb/in", "/sb/out", 30)
    wf = doc.workflow
    bound = WDL.values_from_json(inputs, wf.available_inputs, wf.required_inputs, namespace="pman")
    values = {b.name: b.value.json for b in bound}
    assert values["workers"] == 2
    assert values["cpu"] == 2  # 1500 millicores: whole cores, rounded up
    assert values["memory"] == "64 MiB"
    assert values["runtime_minutes"] == 30
    assert (values["incoming"], values["outgoing"]) == ("/sb/in", "/sb/out")
    runtime = {k for k in doc.tasks[0].runtime}
    assert {"docker", "cpu", "memory", "gpu", "gpuCount", "runtime_minutes"} <= runtime
    assert {"pman_incoming", "pman_outgoing", "maxRetries"} <= runtime


def test_the_script_runs_the_command_word_for_word(tmp_path: Path) -> None:
    s = spec(tmp_path)
    script = build_script(["printf", "[%s]\\n", *s.command[1:]], s.env)
    script += 'printf "A=%s QUOTED=%s\\n" "$A" "$QUOTED"\necho to-stderr >&2\n'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[--say]",
        "[it's $HOME `x`",
        "next]",
        "[/share/incoming]",
        "[/share/outgoing]",
        "A=1 QUOTED=a 'b' \"c\" $D",
        "to-stderr",  # stderr joins stdout, in order
    ]
    assert out.stderr == ""


def test_submit_form(tmp_path: Path) -> None:
    b = CromwellBackend.from_settings(settings(tmp_path))
    form = b.submit_form(spec(tmp_path))
    assert form["workflowSource"][1] == WORKFLOW_WDL
    assert json.loads(form["labels"][1]) == {MANAGED: "true", JID: "job-1", "team": "x"}
    options = json.loads(form["workflowOptions"][1])
    assert options == WORKFLOW_OPTIONS and options["read_from_cache"] is False
    inputs = json.loads(form["workflowInputs"][1])
    assert inputs["pman.incoming"] == str(tmp_path / "key/in")
    assert inputs["pman.outgoing"] == str(tmp_path / "key/out")
    assert inputs["pman.argv"][0] == "copyplugin"
    assert form["workflowTypeVersion"][1] == "1.0"


@pytest.mark.parametrize(("millicores", "cores"), [(1, 1), (100, 1), (1000, 1), (1001, 2)])
def test_cpu_is_whole_cores_rounded_up(millicores: int, cores: int) -> None:
    assert cromwell_cpu(millicores) == cores


# ------------------------------------------------------------------ states


def test_state_tables_cover_cromwells_statuses() -> None:
    assert set(WORKFLOW_STATES) == {
        "Submitted", "Running", "Aborting", "Aborted", "Succeeded", "Failed", "On Hold",
    }  # fmt: skip
    assert set(CALL_STATES) == {
        "NotStarted", "WaitingForQueueSpace", "QueuedInCromwell", "Starting", "Running",
        "Aborting", "RetryableFailure", "Done", "Failed", "Aborted", "Bypassed", "Unstartable",
    }  # fmt: skip
    assert WORKFLOW_STATES["Aborting"] is JobState.RUNNING  # its tasks may still write
    assert WORKFLOW_STATES["Aborted"] is JobState.CANCELLED


def call(status: str, shard: int = 0, rc: int | None = None, **kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"executionStatus": status, "shardIndex": shard, "attempt": 1, **kw}
    if rc is not None:
        c["returnCode"] = rc
    return c


def md(status: str, *calls: dict[str, Any], workers: int = 1, **kw: Any) -> dict[str, Any]:
    return {
        "id": WID,
        "status": status,
        "calls": {"pman.plugin": list(calls)} if calls else {},
        "inputs": {"workers": workers},
        **kw,
    }


RC3 = [{"message": "Job pman.plugin:0:1 exited with return code 3", "causedBy": []}]


@pytest.mark.parametrize(
    ("metadata", "state", "reason", "code"),
    [
        (md("Submitted"), JobState.QUEUED, "", None),
        (md("On Hold"), JobState.QUEUED, "", None),
        (md("Running", call("QueuedInCromwell")), JobState.RUNNING, "", None),
        (md("Aborting", call("Running")), JobState.RUNNING, "", None),
        (md("Aborted", call("Aborted")), JobState.CANCELLED, "aborted", None),
        (md("Succeeded", call("Done", rc=0)), JobState.SUCCEEDED, "", 0),
        (md("Failed", call("Failed", rc=3, failures=RC3)), JobState.FAILED, "exit_code", 3),
        (md("Failed", call("Failed", rc=137)), JobState.FAILED, "killed", 137),
        # no return code: the command never ran
        (
            md("Failed", call("Failed", failures=[{"message": "docker image not found: x"}])),
            JobState.SYSTEM_ERROR,
            "not_run",
            None,
        ),
        (
            md("Failed", call("Failed", failures=[{"message": "exceeded its time limit"}])),
            JobState.FAILED,
            "time_limit",
            None,
        ),
        # failed before any call: Cromwell could not read the workflow
        (
            md("Failed", failures=[{"message": "Workflow input processing failed"}]),
            JobState.SYSTEM_ERROR,
            "workflow_failed",
            None,
        ),
        (md("Exploded"), JobState.UNKNOWN, "unknown_status", None),
    ],
)
def test_job_outcome(metadata: dict[str, Any], state: JobState, reason: str, code: Any) -> None:
    out = job_outcome(metadata, 64)
    assert (out.state, out.reason, out.exit_code) == (state, reason, code)


def test_outcome_messages_name_the_worker_and_cromwells_reason() -> None:
    out = job_outcome(md("Failed", call("Failed", rc=3, failures=RC3)), 64)
    assert out.message == "exited with code 3: Job pman.plugin:0:1 exited with return code 3"
    out = job_outcome(md("Failed", call("Failed", rc=137)), 64)
    assert "most likely out of memory (memory_limit 64 MiB)" in out.message
    # two workers: the failed one is named; a retried shard counts by its latest attempt
    two = md(
        "Failed",
        call("Done", 0, rc=0),
        call("Failed", 1, rc=9, attempt=1),
        call("Failed", 1, rc=5, attempt=2),
        workers=2,
    )
    out = job_outcome(two, 64)
    assert (out.exit_code, out.message) == (5, "worker 1: exited with code 5")
    out = job_outcome(md("Succeeded", call("Done", 0, rc=0), call("Done", 1, rc=0), workers=2), 64)
    assert out.message == "all 2 workers exited with 0"


def test_failure_messages_are_the_innermost_causes() -> None:
    nested = [
        {
            "message": "Workflow failed",
            "causedBy": [
                {"message": "a", "causedBy": []},
                {"message": "wrapper", "causedBy": [{"message": "b"}, {"message": "a"}]},
            ],
        }
    ]
    assert failure_messages(nested) == ["a", "b"]
    assert failure_messages(None) == []


def test_info_from_metadata_and_query() -> None:
    labels = {MANAGED: "true", JID: "job-1", "org.chrisproject.pman.fingerprint": "fp"}
    metadata = md(
        "Succeeded",
        call("Done", rc=0),
        submission="2026-01-02T03:04:05.678Z",
        start="2026-01-02T03:04:06.000Z",
        end="2026-01-02T03:04:09.000Z",
        labels=labels,
        inputs={"pman.argv": ["copyplugin", "/share/outgoing"], "pman.image": "img"},
    )
    info = info_from_metadata(metadata)
    assert (info.name, info.state, info.exit_code) == ("job-1", JobState.SUCCEEDED, 0)
    assert info.command == ["copyplugin", "/share/outgoing"] and info.image == "img"
    assert info.native_id == WID and info.fingerprint == "fp"
    assert info.created_at is not None and info.created_at.microsecond == 678000
    assert info.finished_at is not None and info.finished_at.second == 9

    q = info_from_query({"id": WID, "status": "Running", "labels": labels, "start": "x"})
    assert (q.name, q.state, q.started_at, q.finished_at) == ("job-1", JobState.RUNNING, None, None)


# ------------------------------------------------------------------ logs


def test_tail_lines_reads_only_the_end(tmp_path: Path) -> None:
    f = tmp_path / "stdout"
    f.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(str(f), 3) == ["line 99997\n", "line 99998\n", "line 99999\n"]
    assert tail_lines(str(f), 0) == []
    # a read limit cuts: only whole lines inside it
    assert tail_lines(str(f), 1000, limit=40) == [f"line {i}\n" for i in range(99997, 100_000)]
    f.write_text("a\r\nno newline at the end")
    assert tail_lines(str(f), 5) == ["a\n", "no newline at the end"]


# ------------------------------------------------------------------ calls


class FakeSession:
    """Answers requests from a list of (method, path suffix, status, body)."""

    def __init__(self, *answers: tuple[str, str, int, Any]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        self.calls.append((method, url.removeprefix(URL), kw.get("params") or kw.get("json")))
        for i, (m, suffix, status, body) in enumerate(self.answers):
            if m == method and url.split("?")[0].endswith(suffix):
                del self.answers[i]
                if isinstance(body, Exception):
                    raise body
                r = requests.Response()
                r.status_code = status
                r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
                r.url = url
                r.reason = "reason"
                return r
        raise AssertionError(f"unexpected {method} {url}")

    def close(self) -> None:
        pass


def backend(tmp_path: Path, session: FakeSession) -> CromwellBackend:
    return CromwellBackend(settings(tmp_path), session=session)  # type: ignore[arg-type]


def found(status: str = "Running", jid: str = "job-1") -> dict[str, Any]:
    return {
        "results": [{"id": WID, "status": status, "labels": {MANAGED: "true", JID: jid}}],
        "totalResultsCount": 1,
    }


NONE: dict[str, Any] = {"results": [], "totalResultsCount": 0}


def test_list_is_one_query_by_label(tmp_path: Path) -> None:
    s = FakeSession(("GET", "/query", 200, found()), ("GET", "/query", 200, found()))
    b = backend(tmp_path, s)
    assert [i.name for i in b.list()] == ["job-1"]
    assert [i.state for i in b.list_active()] == [JobState.RUNNING]
    assert len(s.calls) == 2
    assert s.calls[0][2] == [
        ("label", f"{MANAGED}:true"),
        ("additionalQueryResultFields", "labels"),
    ]
    statuses = [v for k, v in s.calls[1][2] if k == "status"]
    assert statuses == ["Submitted", "Running", "Aborting", "On Hold"]


def test_get_uses_the_id_a_query_found(tmp_path: Path) -> None:
    labels = {MANAGED: "true", JID: "job-1"}
    s = FakeSession(
        ("GET", "/query", 200, found()),
        ("GET", "/metadata", 200, md("Running", labels=labels)),
    )
    b = backend(tmp_path, s)
    b.list_active()
    assert b.get("job-1").state is JobState.RUNNING
    assert [c[0:2] for c in s.calls][1] == ("GET", f"/api/workflows/v1/{WID}/metadata")
    # a deleted job's jid taken again: the remembered workflow is not it any more
    s.answers += [
        ("GET", "/metadata", 200, md("Aborted", labels={MANAGED: "deleted", JID: "job-1"})),
        ("GET", "/query", 200, NONE),
    ]
    with pytest.raises(JobNotFound):
        b.get("job-1")


def test_submit_posts_the_form_and_refuses_a_taken_jid(tmp_path: Path) -> None:
    s = FakeSession(
        ("GET", "/query", 200, NONE),
        ("POST", "/api/workflows/v1", 201, {"id": WID, "status": "Submitted"}),
    )
    info = backend(tmp_path, s).submit(spec(tmp_path))
    assert (info.state, info.native_id) == (JobState.QUEUED, WID)
    s = FakeSession(("GET", "/query", 200, found()))
    with pytest.raises(JobExists) as e:
        backend(tmp_path, s).submit(spec(tmp_path))
    assert e.value.existing is not None and e.value.existing.native_id == WID


def test_env_names_the_shell_cannot_set_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOption) as e:
        backend(tmp_path, FakeSession()).submit(spec(tmp_path, env=["OK=1", "NOT-OK=2"]))
    assert "env" in e.value.fields and "NOT-OK" in e.value.message


@pytest.mark.parametrize(
    ("status", "calls"),
    [
        ("Running", ["GET /query", "POST /abort", "PATCH /labels"]),
        ("Succeeded", ["GET /query", "PATCH /labels"]),
    ],
)
def test_delete_aborts_if_needed_and_unlabels(
    tmp_path: Path, status: str, calls: list[str]
) -> None:
    s = FakeSession(
        ("GET", "/query", 200, found(status)),
        ("POST", "/abort", 200, {"id": WID, "status": "Aborting"}),
        ("PATCH", "/labels", 200, {"id": WID, "labels": {MANAGED: "deleted"}}),
    )
    backend(tmp_path, s).delete("job-1")
    assert [f"{m} /{p.rsplit('/', 1)[1]}" for m, p, _ in s.calls] == calls
    assert s.calls[-1][2] == {MANAGED: "deleted"}


def test_delete_of_a_job_that_ended_meanwhile_or_is_unknown(tmp_path: Path) -> None:
    s = FakeSession(
        ("GET", "/query", 200, found("Running")),
        ("POST", "/abort", 403, {"status": "error", "message": "in terminal state Succeeded"}),
        ("PATCH", "/labels", 200, {"id": WID, "labels": {}}),
    )
    backend(tmp_path, s).delete("job-1")
    s = FakeSession(("GET", "/query", 200, NONE))
    backend(tmp_path, s).delete("job-1")
    assert len(s.calls) == 1


def test_logs_tail_every_worker(tmp_path: Path) -> None:
    for shard in (0, 1):
        (tmp_path / f"out{shard}").write_text("".join(f"w{shard} {i}\n" for i in range(5)))
        (tmp_path / f"err{shard}").write_text("")
    logs = {
        "id": WID,
        "calls": {
            "pman.plugin": [
                {
                    "stdout": str(tmp_path / f"out{i}"),
                    "stderr": str(tmp_path / f"err{i}"),
                    "shardIndex": i,
                    "attempt": 1,
                }
                for i in (0, 1)
            ]
        },
    }
    s = FakeSession(("GET", "/query", 200, found()), ("GET", "/logs", 200, logs))
    text = backend(tmp_path, s).logs("job-1", 3)
    assert text == "[worker 1] w1 2\n[worker 1] w1 3\n[worker 1] w1 4\n"
    # files pman cannot see: said so, not a failure; a file not written yet: nothing
    remote = {"stdout": "gs://bucket/x/stdout", "stderr": str(tmp_path / "none")}
    s = FakeSession(
        ("GET", "/query", 200, found()),
        ("GET", "/logs", 200, {"id": WID, "calls": {"pman.plugin": [remote]}}),
    )
    text = backend(tmp_path, s).logs("job-1", 3)
    assert text == "pman cannot read the job's stdout at gs://bucket/x/stdout\n"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("status", "body", "error", "fields"),
    [
        (
            400,
            {"status": "fail", "message": "Invalid label: org.chrisproject.pman.auid: too long"},
            InvalidJobSpec,
            {"auid"},
        ),
        (
            400,
            {"status": "fail", "message": "Required workflow input 'pman.memory' not specified"},
            InvalidJobSpec,
            {"memory_limit"},
        ),
        (404, {"status": "fail", "message": "Unrecognized workflow ID"}, JobNotFound, set()),
        (503, {"status": "fail", "message": "shutting down"}, BackendUnavailable, set()),
        (500, {"status": "error", "message": "boom"}, BackendError, set()),
        (200, b"not json", BackendError, set()),
    ],
)
def test_error_conversion(
    tmp_path: Path, status: int, body: Any, error: type[Exception], fields: set[str]
) -> None:
    s = FakeSession(("GET", "/query", 200, NONE), ("POST", "/api/workflows/v1", status, body))
    with pytest.raises(error) as e:
        backend(tmp_path, s).submit(spec(tmp_path))
    if status >= 500:
        assert not isinstance(e.value, BackendUnavailable) or status == 503
    assert set(getattr(e.value, "fields", {})) == fields
    assert "cromwell.example:8000" in str(e.value)


@pytest.mark.parametrize("exc", [requests.ConnectionError("refused"), requests.Timeout("slow")])
def test_unreachable_is_unavailable(tmp_path: Path, exc: Exception) -> None:
    s = FakeSession(("GET", "/engine/v1/version", 0, exc))
    with pytest.raises(BackendUnavailable) as e:
        backend(tmp_path, s).ping()
    assert URL in str(e.value)


# ------------------------------------------------------------------ settings


def test_settings_and_names(tmp_path: Path) -> None:
    b = load_backend("cromwell", settings(tmp_path))  # no network at start-up
    assert isinstance(b, CromwellBackend) and b.describe() == f"Cromwell server at {URL}"
    b.check_name("x" * 255)
    for bad in ("x" * 256, "has:colon", "has/slash", "-dash"):
        with pytest.raises(InvalidJobSpec):
            b.check_name(bad)
    with pytest.raises(ConfigError) as e:
        load_settings({"CONTAINER_ENV": "cromwell", "STOREBASE": str(tmp_path)})
    assert "CROMWELL_URL" in e.value.fields
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, CROMWELL_URL="cromwell:8000")
    assert "CROMWELL_URL" in e.value.fields
    with pytest.raises(ConfigError) as e:
        load_backend(
            "cromwell",
            settings(tmp_path, CONTAINER_USER="1000:1000", SHM_SIZE="64", IGNORE_LIMITS="yes"),
        )
    assert {"CONTAINER_USER", "SHM_SIZE", "IGNORE_LIMITS"} <= set(e.value.fields)
