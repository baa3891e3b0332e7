"""The v1 contract and the error mapping, against a fake backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from pman.app import create_app
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    UnsupportedOption,
)
from pman.models import JobState
from tests.helpers import job_body
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend


def test_server_info(client: FlaskClient) -> None:
    data = client.get("/api/v1/").get_json()
    assert data == {"server_version": "4.0.0", "container_env": "local", "storage_type": "host"}


def test_post_get_delete_contract(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    body = job_body(
        jid="chris-jid-1", args=["--n", "1", "--mask", "a b"], args_path_flags=["--mask"]
    )
    resp = client.post("/api/v1/", json=body)
    assert resp.status_code == 201
    data = resp.get_json()
    # upstream's seven fields, in their order, then pman's added compute_resource (issue 15)
    assert list(data) == [
        "jid",
        "image",
        "cmd",
        "status",
        "message",
        "timestamp",
        "logs",
        "compute_resource",
    ]
    assert data["compute_resource"] == "default"
    assert data["cmd"] == (
        "copyplugin --n 1 --mask /share/incoming /share/incoming /share/outgoing"
    )
    assert data["status"] == "started"
    assert data["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert data["logs"] == ""

    fake.logs_text["chris-jid-1"] = "".join(f"line {i}\n" for i in range(2000))
    fake.set_state("chris-jid-1", JobState.SUCCEEDED, exit_code=0, message="exited with code 0")
    assert client.get("/api/v1/chris-jid-1/").get_json()["status"] == "started"  # not tracked yet
    track()
    data = client.get("/api/v1/chris-jid-1/").get_json()
    assert data["status"] == "finishedSuccessfully"
    assert data["logs"].splitlines() == [f"line {i}" for i in range(1000, 2000)]  # JOB_LOGS_TAIL

    assert client.delete("/api/v1/chris-jid-1/").status_code == 204
    assert fake.deleted == ["chris-jid-1"]
    resp = client.get("/api/v1/chris-jid-1/")
    assert resp.status_code == 404
    assert "chris-jid-1" in resp.get_json()["message"]


@pytest.mark.parametrize(
    ("state", "v1"),
    [
        (JobState.QUEUED, "notstarted"),
        (JobState.RUNNING, "started"),
        (JobState.SUCCEEDED, "finishedSuccessfully"),
        (JobState.FAILED, "finishedWithError"),
        (JobState.SYSTEM_ERROR, "finishedWithError"),
        (JobState.CANCELLED, "finishedWithError"),
        (JobState.UNKNOWN, "undefined"),
    ],
)
def test_states_map_to_upstream_strings(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], object], state: JobState, v1: str
) -> None:
    client.post("/api/v1/", json=job_body(jid="s"))
    fake.set_state("s", state)
    track()
    assert client.get("/api/v1/s/").get_json()["status"] == v1


def test_url_without_trailing_slash_and_leading_slash_jid(client: FlaskClient) -> None:
    client.post("/api/v1/", json=job_body(jid="/j2"))
    assert client.get("/api/v1/j2").status_code == 200


def test_same_request_again_returns_the_existing_job(
    client: FlaskClient, fake: FakeBackend
) -> None:
    body = job_body(jid="retry")
    first = client.post("/api/v1/", json=body)
    again = client.post("/api/v1/", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["jid"] == "retry"
    assert len(fake.specs) == 1


def test_different_request_same_jid_is_409(client: FlaskClient) -> None:
    client.post("/api/v1/", json=job_body(jid="dup"))
    resp = client.post("/api/v1/", json=job_body(jid="dup", cpu_limit=2000))
    assert resp.status_code == 409
    assert "dup" in resp.get_json()["message"]


def test_delete_unknown_is_404(client: FlaskClient, fake: FakeBackend) -> None:
    assert client.delete("/api/v1/nope/").status_code == 404
    assert fake.deleted == []


def test_remove_jobs_no_keeps_the_job(storebase: Path, tmp_path: Path, fake: FakeBackend) -> None:
    app = create_app(make_settings(storebase, tmp_path, REMOVE_JOBS="no"), backend=fake)
    c = app.test_client()
    c.post("/api/v1/", json=job_body(jid="keep"))
    assert c.delete("/api/v1/keep/").status_code == 204
    assert fake.deleted == []
    assert c.get("/api/v1/keep/").status_code == 200


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidJobSpec("bad thing"), 400),
        (UnsupportedOption("no gpus"), 400),
        (JobNotFound("gone"), 404),
        (JobExists("taken"), 409),
        (BackendUnavailable("Docker engine at unix:///x is unreachable"), 503),
        (BackendError("engine broke"), 502),
    ],
)
def test_error_mapping(
    client: FlaskClient, fake: FakeBackend, error: Exception, status: int
) -> None:
    fake.fail_with = error
    resp = client.post("/api/v1/", json=job_body())
    assert resp.status_code == status
    if status != 409:  # the API words a name clash itself
        assert resp.get_json()["message"] == str(error)
    # the failed submission left no record behind
    assert client.get("/api/v1/jobs/").get_json()["jobs"] == []


def test_bug_is_a_json_500_without_trace(client: FlaskClient, fake: FakeBackend) -> None:
    fake.fail_with = RuntimeError("secret internals at /srv/pman")
    resp = client.post("/api/v1/", json=job_body())
    assert resp.status_code == 500
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and "secret internals" not in text
    assert resp.get_json()["message"].startswith("internal error")


def test_health_follows_the_backend(client: FlaskClient, fake: FakeBackend) -> None:
    assert client.get("/health").status_code == 200
    fake.fail_with = BackendUnavailable("Docker engine at unix:///x is unreachable")
    resp = client.get("/health")
    assert resp.status_code == 503
    assert "Docker engine" in resp.get_json()["message"]


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    resp = client.get("/api/v2/")
    assert resp.status_code == 404 and "message" in resp.get_json()
    resp = client.put("/api/v1/")
    assert resp.status_code == 405 and "message" in resp.get_json()
    assert "POST" in resp.headers["Allow"]


def test_backend_is_built_once(
    storebase: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pman.app

    built: list[str] = []

    def fake_load(name: str, settings: object) -> FakeBackend:
        built.append(name)
        return FakeBackend()

    monkeypatch.setattr(pman.app, "load_backend", fake_load)
    app = create_app(make_settings(storebase, tmp_path))
    c = app.test_client()
    for _ in range(3):
        c.post("/api/v1/", json=job_body())
        c.get("/api/v1/")
    assert built == ["local"]


def test_impossible_names_in_urls_never_reach_the_backend(
    client: FlaskClient, fake: FakeBackend
) -> None:
    for path in ("/api/v1/..%2f../", "/api/v1/.../", "/api/v1/a%20b/", "/api/v1/-x/"):
        assert client.get(path).status_code == 404, path
        assert client.delete(path).status_code == 404, path
    assert fake.calls == []


def test_list_filters_by_v1_status_and_auid(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    client.post("/api/v1/", json=job_body(jid="a1", auid="alice"))
    client.post("/api/v1/", json=job_body(jid="b1", auid="bob"))
    fake.set_state("a1", JobState.FAILED, exit_code=1)
    track()
    jobs = client.get("/api/v1/jobs/?status=finishedWithError").get_json()["jobs"]
    assert [(j["jid"], j["state"], j["exit_code"]) for j in jobs] == [("a1", "failed", 1)]
    jobs = client.get("/api/v1/jobs/?auid=bob&status=started,queued").get_json()["jobs"]
    assert [j["jid"] for j in jobs] == ["b1"]
    assert jobs[0]["labels"]["org.chrisproject.pman.auid"] == "bob"


@pytest.mark.parametrize("jid", ["jobs", "openapi.json"])
def test_reserved_jids_are_refused(client: FlaskClient, jid: str) -> None:
    resp = client.post("/api/v1/", json=job_body(jid=jid))
    assert resp.status_code == 400
    assert "jid" in resp.get_json()["fields"]


def test_polls_do_not_call_the_engine_for_finished_jobs(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    client.post("/api/v1/", json=job_body(jid="p"))
    fake.logs_text["p"] = "done\n"
    fake.set_state("p", JobState.SUCCEEDED, exit_code=0)
    track()
    fake.calls.clear()
    for _ in range(20):
        assert client.get("/api/v1/p/").get_json()["logs"] == "done\n"
    assert fake.calls == []


def test_running_job_logs_come_from_the_tracker_never_from_a_poll(
    app: object, client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    tracker = app.extensions["pman"].service.tracker  # type: ignore[attr-defined]
    client.post("/api/v1/", json=job_body(jid="r"))
    fake.logs_text["r"] = "line 1\n"
    track()  # the cycle sees it running
    assert tracker.refresh_logs() == 1
    fake.calls.clear()
    for _ in range(20):
        assert client.get("/api/v1/r/").get_json()["logs"] == "line 1\n"
    assert fake.calls == [], "a poll asked the engine"
    assert tracker.refresh_logs() == 0, "refreshed before PMAN_LOGS_REFRESH_SECONDS"

    fake.logs_text["r"] = "line 1\nline 2\n"
    tracker.logs_every = 0.0
    assert tracker.refresh_logs() == 1
    assert client.get("/api/v1/r/").get_json()["logs"] == "line 1\nline 2\n"


def test_unchanged_logs_are_not_rewritten_and_final_logs_win(
    app: object, client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    service = app.extensions["pman"].service  # type: ignore[attr-defined]
    tracker, registry = service.tracker, service.registry
    writes: list[str] = []
    real_write = registry.set_running_logs
    registry.set_running_logs = lambda job_id, logs: (writes.append(logs), real_write(job_id, logs))
    client.post("/api/v1/", json=job_body(jid="w"))
    fake.logs_text["w"] = "working\n"
    track()
    tracker.logs_every = 0.0
    for _ in range(3):
        tracker.refresh_logs()
    assert writes == ["working\n"], "logs that did not change were written again"

    fake.logs_text["w"] = "working\ndone\n"
    fake.set_state("w", JobState.SUCCEEDED, exit_code=0)
    track()
    record = registry.active("w")
    registry.set_running_logs(record.id, "working\n")  # a refresh that raced the end
    assert client.get("/api/v1/w/").get_json()["logs"] == "working\ndone\n"


def test_logs_refreshes_are_paced(
    app: object,
    client: FlaskClient,
    fake: FakeBackend,
    track: Callable[[], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many running jobs never make a burst of engine calls."""
    import time

    from pman import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "LOGS_CALLS_PER_S", 50.0)
    for i in range(6):
        client.post("/api/v1/", json=job_body(jid=f"j{i}", output_dir=f"key-1/out-{i}"))
    track()
    started = time.monotonic()
    assert app.extensions["pman"].service.tracker.refresh_logs() == 6  # type: ignore[attr-defined]
    assert time.monotonic() - started >= 5 / 50


def test_record_of_a_submission_that_never_reached_the_engine(
    app: object, client: FlaskClient, fake: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pman died between recording a job and submitting it: after the grace
    period the tracker says so instead of leaving it queued forever."""
    from pman import tracker as tracker_module
    from pman.jobs import build_spec
    from pman.models import JobRequest

    service = app.extensions["pman"].service  # type: ignore[attr-defined]
    spec = build_spec(JobRequest(**job_body(jid="lost")), service.settings, service.storage)
    service.registry.create(spec, "fake")  # recorded, never submitted
    monkeypatch.setattr(tracker_module, "SUBMIT_GRACE_S", 0.0)
    service.tracker.run_once()
    data = client.get("/api/v1/lost/").get_json()
    assert data["status"] == "finishedWithError"
    assert "before the job reached the engine" in data["message"]


def test_health_is_503_when_the_registry_is_unusable(app: object, client: FlaskClient) -> None:
    registry = app.extensions["pman"].service.registry  # type: ignore[attr-defined]
    assert client.get("/health").status_code == 200
    from pman.registry import make_engine

    registry.engine.dispose()
    # a database that cannot be opened, as when its disk or server is gone
    registry.engine = make_engine("sqlite:////nonexistent-dir/pman.db")
    resp = client.get("/health")
    assert resp.status_code == 503
    assert "registry" in resp.get_json()["message"]
    resp = client.get("/api/v1/anything/")
    assert resp.status_code == 503, "a registry outage is a 503, never a 500"


def test_poll_fast_path_answers_exactly_as_the_flask_route(
    app: object, client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    """GET /api/v1/<jid>/ skips Flask for speed: byte for byte the same answer,
    and every error still goes through Flask's handlers."""
    from werkzeug.test import Client

    from pman.api.fastpath import PollFastPath

    client.post("/api/v1/", json=job_body(jid="fp", args=["--name", "ü ünïcode"]))
    fake.logs_text["fp"] = "line 1\nlïne 2\n"
    fake.set_state("fp", JobState.FAILED, exit_code=3, message='exited with code 3 "quoted"')
    track()
    layer = app.wsgi_app  # type: ignore[attr-defined]
    while not isinstance(layer, PollFastPath):  # the middlewares around it
        layer = layer.app
    flask_only = Client(layer.app)
    for path in ("/api/v1/fp/", "/api/v1/fp"):
        fast = client.get(path)
        slow = flask_only.get(path)
        assert (fast.status_code, fast.get_data()) == (slow.status_code, slow.get_data())
        assert fast.headers["Content-Type"] == slow.headers["Content-Type"]
    missing = client.get("/api/v1/nope/")
    assert missing.status_code == 404 and "nope" in missing.get_json()["message"]
    assert client.get("/api/v1/jobs/").status_code == 200  # reserved paths are not polls


def test_only_this_instances_jobs_are_adopted(
    app: object, client: FlaskClient, fake: FakeBackend, track: Callable[[], object]
) -> None:
    """Several pmans may share one engine: each adopts only its own strays
    (and unnamed ones, made before jobs carried an instance)."""
    from pman.labels import LABEL_INSTANCE, LABEL_MANAGED
    from pman.models import JobInfo

    service = app.extensions["pman"].service  # type: ignore[attr-defined]
    ours = service.settings.registry.instance
    assert ours, "every pman has an instance name"
    for name, instance in (("mine", ours), ("theirs", "another-pman"), ("old", None)):
        labels = {LABEL_MANAGED: "true"}
        if instance is not None:
            labels[LABEL_INSTANCE] = instance
        fake.jobs[name] = JobInfo(name=name, state=JobState.RUNNING, labels=labels)
    track()
    listed = {j["jid"] for j in client.get("/api/v1/jobs/").get_json()["jobs"]}
    assert listed == {"mine", "old"}
    assert client.get("/api/v1/theirs/").status_code == 404


def test_jobs_carry_this_instances_name(client: FlaskClient, fake: FakeBackend) -> None:
    from pman.labels import LABEL_INSTANCE

    client.post("/api/v1/", json=job_body(jid="labelled"))
    instance = fake.specs["labelled"].labels[LABEL_INSTANCE]
    assert instance and len(instance) == 12
