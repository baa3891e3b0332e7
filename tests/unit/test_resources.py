"""Several compute resources behind one pman (issue 15), against fake engines:
routing by field, by capability, by URL prefix and overflow; per-resource
queues, health, lists, the resources list and the tracker's lanes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pman.app import create_app
from pman.backends.base import SINGLE, Capabilities
from pman.errors import BackendUnavailable, UnsupportedOption
from pman.labels import LABEL_MANAGED, LABEL_RESOURCE
from pman.models import JobInfo, JobSpec, JobState
from pman.registry import Registry
from tests.helpers import job_body
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend


class SingleFake(FakeBackend):
    """A fake engine that runs one container per job, without GPUs (as docker/local)."""

    @property
    def capabilities(self) -> Capabilities:
        return SINGLE

    def check(self, spec: JobSpec) -> None:
        if spec.resources.number_of_workers != 1:
            raise UnsupportedOption(
                "the fake backend runs one container per job (number_of_workers must be 1)",
                fields={"number_of_workers": "must be 1"},
            )
        if spec.resources.gpu_limit:
            raise UnsupportedOption("no GPUs here", fields={"gpu_limit": "must be 0"})


@pytest.fixture
def small() -> SingleFake:
    return SingleFake()


@pytest.fixture
def big() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def make_app(
    storebase: Path, tmp_path: Path, small: SingleFake, big: FakeBackend
) -> Callable[..., Flask]:
    def make(**env: str) -> Flask:
        settings = make_settings(
            storebase,
            tmp_path,
            **{
                "PMAN_RESOURCES": "small,big",
                "SMALL_PMAN_RESOURCE_DESCRIPTION": "one container per job",
                **env,
            },
        )
        return create_app(settings=settings, backends={"small": small, "big": big})

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


def post(client: FlaskClient, path: str = "/api/v1/", **fields: Any) -> Any:
    return client.post(path, json=job_body(**fields))


# ---------------------------------------------------------------- routing
def test_a_job_goes_to_the_first_resource_that_can_run_it(
    client: FlaskClient, small: SingleFake, big: FakeBackend
) -> None:
    resp = post(client, jid="plain")
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["compute_resource"] == "small"
    assert "plain" in small.jobs and "plain" not in big.jobs
    # the engine object carries its resource; the registry's labels stay the request's
    assert small.specs["plain"].labels[LABEL_RESOURCE] == "small"
    listed = client.get("/api/v1/jobs/").get_json()["jobs"]
    assert LABEL_RESOURCE not in listed[0]["labels"]
    assert listed[0]["compute_resource"] == "small"


def test_a_job_goes_to_a_resource_with_the_capability(
    client: FlaskClient, small: SingleFake, big: FakeBackend
) -> None:
    workers = post(client, jid="two-workers", number_of_workers=2)
    gpu = post(client, jid="gpu", gpu_limit=1)
    assert workers.status_code == gpu.status_code == 201
    assert workers.get_json()["compute_resource"] == gpu.get_json()["compute_resource"] == "big"
    assert set(big.jobs) == {"two-workers", "gpu"} and not small.jobs


def test_a_resource_without_gpus_passes_gpu_jobs_on(
    make_app: Callable[..., Flask], small: SingleFake, big: FakeBackend
) -> None:
    # both engines could give GPUs; the first resource says it has none
    app = make_app(PMAN_RESOURCES="big,small", BIG_PMAN_GPUS="no")
    small.check = lambda spec: None  # type: ignore[method-assign]
    with app.test_client() as client:
        routed = post(client, jid="gpu", gpu_limit=1)
        assert routed.status_code == 201, routed.get_json()
        assert routed.get_json()["compute_resource"] == "small"
        named = post(client, jid="gpu-big", gpu_limit=1, compute_resource="big")
        assert named.status_code == 400
        assert set(named.get_json()["fields"]) >= {"gpu_limit", "compute_resource"}
        assert "PMAN_GPUS=no" in named.get_json()["message"]
        plain = post(client, jid="plain")
        assert plain.get_json()["compute_resource"] == "big"
        listed = {r["name"]: r for r in client.get("/api/v1/resources/").get_json()["resources"]}
        assert listed["big"]["capabilities"]["gpus"] is False
    assert set(big.jobs) == {"plain"} and set(small.jobs) == {"gpu"}


def test_a_named_resource_runs_the_job_or_says_why_not(
    client: FlaskClient, small: SingleFake, big: FakeBackend
) -> None:
    resp = post(client, jid="named", compute_resource="big")
    assert resp.status_code == 201 and resp.get_json()["compute_resource"] == "big"
    assert "named" in big.jobs
    unknown = post(client, jid="unknown", compute_resource="nowhere")
    assert unknown.status_code == 400
    assert (
        "nowhere" in unknown.get_json()["fields"]["compute_resource"]
        or "nowhere" in (unknown.get_json()["message"])
    )
    assert "small, big" in unknown.get_json()["fields"]["compute_resource"]
    unable = post(client, jid="unable", compute_resource="small", number_of_workers=2)
    assert unable.status_code == 400
    body = unable.get_json()
    assert body["message"].startswith("resource 'small' cannot run this job: ")
    assert "number_of_workers" in body["fields"]["compute_resource"]
    assert "number_of_workers" in body["fields"]
    assert not small.jobs and list(big.jobs) == ["named"]


def test_no_resource_can_run_it_lists_each_reason(
    make_app: Callable[..., Flask], small: SingleFake
) -> None:
    client = make_app(BIG_PMAN_MAX_WORKERS="2").test_client()
    resp = post(client, jid="three", number_of_workers=3)
    assert resp.status_code == 400
    body = resp.get_json()
    assert "resource 'small' cannot run this job" in body["message"]
    assert "resource 'big' cannot run this job" in body["message"]
    assert "PMAN_MAX_WORKERS" in body["message"]
    assert {"compute_resource", "number_of_workers"} <= set(body["fields"])


def test_overflow_passes_jobs_on_only_where_the_full_resource_allows_it(
    make_app: Callable[..., Flask], small: SingleFake, big: FakeBackend
) -> None:
    client = make_app(SMALL_PMAN_MAX_RUNNING="1", SMALL_PMAN_OVERFLOW="yes").test_client()
    assert post(client, jid="o1").get_json()["compute_resource"] == "small"
    second = post(client, jid="o2")
    assert second.status_code == 201 and second.get_json()["compute_resource"] == "big"
    assert "o2" in big.jobs
    # named, the job waits in its resource's queue instead
    named = post(client, jid="o3", compute_resource="small")
    assert named.status_code == 201 and named.get_json()["status"] == "notstarted"
    assert named.get_json()["compute_resource"] == "small" and "o3" not in small.jobs


def test_without_overflow_a_job_waits_in_the_first_able_resource_s_queue(
    make_app: Callable[..., Flask], small: SingleFake, big: FakeBackend
) -> None:
    app = make_app(SMALL_PMAN_MAX_RUNNING="1")
    client = app.test_client()
    post(client, jid="w1")
    waiting = post(client, jid="w2")
    assert waiting.get_json()["status"] == "notstarted"
    assert waiting.get_json()["compute_resource"] == "small" and not big.jobs
    # the queue is the resource's: a job for big runs at once
    assert post(client, jid="w3", compute_resource="big").get_json()["status"] == "started"
    small.set_state("w1", JobState.SUCCEEDED, exit_code=0)
    app.extensions["pman"].service.tracker.run_once()
    assert "w2" in small.jobs, "started from small's queue"
    assert small.specs["w2"].labels[LABEL_RESOURCE] == "small"


# ---------------------------------------------------------------- URL pinning
def test_a_url_prefix_pins_the_resource(
    client: FlaskClient, small: SingleFake, big: FakeBackend
) -> None:
    pinned = post(client, "/big/api/v1/", jid="pinned")
    assert pinned.status_code == 201 and pinned.get_json()["compute_resource"] == "big"
    other = post(client, "/big/api/v1/", jid="other", compute_resource="small")
    assert other.status_code == 400 and "compute_resource" in other.get_json()["fields"]
    post(client, jid="on-small")
    assert client.get("/big/api/v1/pinned/").status_code == 200
    assert client.get("/small/api/v1/pinned/").status_code == 404
    assert client.get("/api/v1/pinned/").status_code == 200, "/api/v1/ serves every resource"
    assert client.delete("/small/api/v1/pinned/").status_code == 404
    assert "pinned" in big.jobs
    jobs = client.get("/big/api/v1/jobs/").get_json()["jobs"]
    assert [j["jid"] for j in jobs] == ["pinned"]
    assert client.get("/big/api/v1/jobs/?compute_resource=small").get_json()["jobs"] == []
    names = [r["name"] for r in client.get("/big/api/v1/resources/").get_json()["resources"]]
    assert names == ["big"]
    assert client.get("/nowhere/api/v1/").status_code == 404
    assert client.get("/nowhere/api/v1/jobs/").status_code == 404
    assert client.get("/big/api/v1/").get_json()["container_env"] == "local"
    assert client.post("/big/api/v1/pinned/cancel/").status_code == 200
    assert big.cancelled == ["pinned"]


def test_a_single_resource_is_default_and_pinnable(
    storebase: Path, tmp_path: Path, big: FakeBackend
) -> None:
    client = create_app(make_settings(storebase, tmp_path), backend=big).test_client()
    resp = post(client, "/default/api/v1/", jid="d")
    assert resp.status_code == 201 and resp.get_json()["compute_resource"] == "default"
    assert client.get("/default/api/v1/d/").get_json()["compute_resource"] == "default"
    assert post(client, jid="reserved-name", compute_resource="other").status_code == 400
    assert post(client, jid="resources").status_code == 400, "a reserved jid"


# ---------------------------------------------------------------- lists, resources
def test_the_list_filters_by_resource(client: FlaskClient) -> None:
    post(client, jid="a1")
    post(client, jid="b1", compute_resource="big")
    post(client, jid="b2", number_of_workers=2)

    def jids(query: str) -> list[str]:
        return [j["jid"] for j in client.get(f"/api/v1/jobs/{query}").get_json()["jobs"]]

    assert jids("?compute_resource=big") == ["b2", "b1"]
    assert jids("?compute_resource=small") == ["a1"]
    assert jids("?compute_resource=small,big") == ["b2", "b1", "a1"]
    assert jids("?compute_resource=nowhere") == []
    assert client.get("/api/v1/b1/events/").get_json()["compute_resource"] == "big"


def test_the_resources_list(make_app: Callable[..., Flask], big: FakeBackend) -> None:
    client = make_app(
        SMALL_PMAN_MAX_RUNNING="1",
        BIG_PMAN_MAX_GPU_LIMIT="2",
        BIG_PMAN_IMAGE_ALLOWLIST="localhost/*,docker.io/fnndsc/*",
    ).test_client()
    post(client, jid="r1")
    post(client, jid="r2", compute_resource="small")
    big.fail_with = BackendUnavailable("big's engine is not there")
    resources = client.get("/api/v1/resources/").get_json()["resources"]
    assert [r["name"] for r in resources] == ["small", "big"]
    small_r, big_r = resources
    assert small_r["backend"] == "fake" and small_r["description"] == "one container per job"
    assert small_r["capabilities"] == {"gpus": False, "max_workers": 1, "array_workers": False}
    assert big_r["capabilities"] == {"gpus": True, "max_workers": None, "array_workers": True}
    assert (small_r["running"], small_r["queued"]) == (1, 1)
    assert small_r["caps"]["max_running"] == 1 and big_r["caps"]["max_gpu_limit"] == 2
    assert big_r["caps"]["image_allowlist"] == ["localhost/*", "docker.io/fnndsc/*"]
    assert small_r["caps"]["image_allowlist"] == []
    assert small_r["healthy"] and small_r["problem"] is None
    assert not big_r["healthy"] and "not there" in big_r["problem"]


# ---------------------------------------------------------------- health
def test_health_names_a_resource_that_is_down_and_the_others_carry_on(
    client: FlaskClient, small: SingleFake, big: FakeBackend
) -> None:
    big.fail_with = BackendUnavailable("big's engine is not there")
    resp = client.get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "ok" and "big" in body["message"]
    assert body["resources"]["small"] == {"backend": "fake", "healthy": True, "problem": None}
    assert not body["resources"]["big"]["healthy"]
    assert post(client, jid="to-big", compute_resource="big").status_code == 503
    assert post(client, jid="to-small").status_code == 201
    small.fail_with = BackendUnavailable("small's engine is not there either")
    down = client.get("/health")
    assert down.status_code == 503 and down.get_json()["status"] == "unavailable"
    assert "no compute resource answers" in down.get_json()["message"]


# ---------------------------------------------------------------- the tracker's lanes
def test_the_tracker_lists_each_resource_once_and_an_outage_stays_there(
    app: Flask, client: FlaskClient, small: SingleFake, big: FakeBackend
) -> None:
    tracker = app.extensions["pman"].service.tracker
    post(client, jid="t-small")
    post(client, jid="t-big", compute_resource="big")
    tracker.run_once()  # reconciles first
    small.calls.clear()
    big.calls.clear()
    report = tracker.run_once()
    assert report.engine_calls == 2 and small.calls == ["list"] and big.calls == ["list"]
    big.fail_with = BackendUnavailable("gone")
    small.set_state("t-small", JobState.SUCCEEDED, exit_code=0)
    report = tracker.run_once()
    assert report.unavailable == ["big"]
    assert client.get("/api/v1/t-small/").get_json()["status"] == "finishedSuccessfully"
    assert client.get("/api/v1/t-big/").get_json()["status"] == "started"


def test_adoption_finds_each_job_s_resource(
    app: Flask, small: SingleFake, big: FakeBackend
) -> None:
    service = app.extensions["pman"].service
    labelled = {LABEL_MANAGED: "true", LABEL_RESOURCE: "small"}
    for engine in (small, big):  # two resources sharing one engine see the same jobs
        engine.jobs["lab"] = JobInfo(name="lab", state=JobState.RUNNING, labels=labelled)
    big.jobs["old"] = JobInfo(name="old", state=JobState.RUNNING, labels={LABEL_MANAGED: "true"})
    service.tracker.request_reconcile()
    service.tracker.run_once()
    registry: Registry = service.registry
    assert registry.active("lab").resource == "small"
    assert registry.active("old").resource == "big", "unlabelled: the engine that listed it"


def test_a_job_of_a_resource_no_longer_configured_stays_readable(
    app: Flask, client: FlaskClient
) -> None:
    registry: Registry = app.extensions["pman"].service.registry
    registry.adopt(JobInfo(name="orphan", state=JobState.RUNNING), "fake", "", {}, resource="gone")
    polled = client.get("/api/v1/orphan/")
    assert polled.status_code == 200 and polled.get_json()["compute_resource"] == "gone"
    for resp in (client.delete("/api/v1/orphan/"), client.post("/api/v1/orphan/cancel/")):
        assert resp.status_code == 400
        assert "no longer serves" in resp.get_json()["message"]
        assert "compute_resource" in resp.get_json()["fields"]
    app.extensions["pman"].service.tracker.run_once()  # not followed, no error


def test_a_pinned_path_is_in_the_lane_of_its_unprefixed_path() -> None:
    from pman.api.lanes import Lane, lane_of
    from pman.api.pinning import split_prefix

    assert split_prefix("/hpc/api/v1/x/logs/") == ("hpc", "/api/v1/x/logs/")
    assert split_prefix("/api/v1/x/") == (None, "/api/v1/x/")
    assert split_prefix("/health") == (None, "/health")
    for method, path in (
        ("POST", "/api/v1/"),
        ("DELETE", "/api/v1/j/"),
        ("POST", "/api/v1/j/cancel/"),
        ("GET", "/api/v1/j/logs/"),
        ("GET", "/api/v1/j/"),
        ("GET", "/api/v1/resources/"),
    ):
        assert lane_of(method, "/gpu-a" + path) is lane_of(method, path), path
    assert lane_of("POST", "/gpu-a/api/v1/") is Lane.ENGINE
