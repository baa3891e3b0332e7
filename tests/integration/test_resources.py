"""One pman serving two compute resources on real engines (issue 15): Podman
(``pod``) and Docker (``dock``), same image and storage. Routing by the
request's field, by what a resource can run (its caps), by URL prefix, and
overflow; each resource's queue surviving a restart of pman; one resource's
engine unreachable while the other carries on.

No assertion depends on timing: a job that must hold a slot is a long
``sleeper`` that the test removes itself."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from pman.labels import LABEL_RESOURCE
from tests.integration.conftest import SOCKETS, TEST_IMAGE, Pman, engine_client

pytestmark = [pytest.mark.docker, pytest.mark.podman]

#: podman first: jobs that name no resource go there while it can take them
TWO = {
    "PMAN_RESOURCES": "pod,dock",
    "POD_CONTAINER_ENV": "podman",
    "POD_DOCKER_HOST": SOCKETS["podman"],
    "POD_PMAN_RESOURCE_DESCRIPTION": "the podman service",
}


@pytest.fixture
def engines() -> dict[str, docker.APIClient]:
    return {"pod": engine_client("podman"), "dock": engine_client("docker")}


@pytest.fixture
def two(
    make_pman: Callable[..., Pman], engines: dict[str, docker.APIClient]
) -> Iterator[Callable[..., Pman]]:
    """make(**ENV) -> a pman of the two resources; every job it made is removed
    from both engines afterwards."""
    made: list[Pman] = []

    def make(storebase: Path | None = None, **env: str) -> Pman:
        p = make_pman("docker", storebase, **{**TWO, **env})
        made.append(p)
        return p

    yield make
    for p in made:
        for jid in p.jids:
            for engine in engines.values():
                with contextlib.suppress(docker.errors.APIError):
                    engine.remove_container(jid, force=True)


def sleeper(p: Pman, **overrides: Any) -> dict[str, Any]:
    """A job that holds its slot until the test removes it."""
    return p.body("sleeper", args=["600"], type="fs", **overrides)


def on_engine(engine: docker.APIClient, jid: str) -> dict[str, Any] | None:
    try:
        return engine.inspect_container(jid)
    except docker.errors.NotFound:
        return None


def resource_of(p: Pman, jid: str) -> str:
    return str(p.get(jid).json()["compute_resource"])


def test_jobs_are_routed_by_field_by_caps_and_by_url(
    two: Callable[..., Pman], engines: dict[str, docker.APIClient]
) -> None:
    p = two(POD_PMAN_MAX_MEMORY_LIMIT="100")
    # by capability: 128 MiB is over pod's cap, dock takes it
    big = p.body(memory_limit=200, output_dir="key-1/out-big")
    small = p.body(memory_limit=64, output_dir="key-1/out-small")
    named = p.body(memory_limit=64, compute_resource="dock", output_dir="key-1/out-named")
    for body in (big, small, named):
        resp = p.post(body)
        assert resp.status_code == 201, resp.text
    pinned = p.body(memory_limit=64, output_dir="key-1/out-pinned")
    resp = requests.post(f"{p.url}/dock/api/v1/", json=pinned, timeout=60)
    assert resp.status_code == 201, resp.text
    expected = {big["jid"]: "dock", small["jid"]: "pod", named["jid"]: "dock"}
    expected[pinned["jid"]] = "dock"
    for jid, resource in expected.items():
        done = p.wait(jid)
        assert done["status"] == "finishedSuccessfully", done
        assert done["compute_resource"] == resource
        container = on_engine(engines[resource], jid)
        assert container is not None, f"{jid} is not on {resource}'s engine"
        assert container["Config"]["Labels"][LABEL_RESOURCE] == resource
        other = "pod" if resource == "dock" else "dock"
        assert on_engine(engines[other], jid) is None
    for body in (big, small, named, pinned):
        assert (p.out(body) / "out-data.txt").read_text() == "some data\n"
    # what cannot run where it is sent is refused, naming the field
    refused = p.post(p.body(memory_limit=200, compute_resource="pod"))
    assert refused.status_code == 400
    assert "PMAN_MAX_MEMORY_LIMIT" in refused.json()["fields"]["compute_resource"]
    # the pinned URL sees its resource's jobs only
    assert requests.get(f"{p.url}/pod/api/v1/{pinned['jid']}/", timeout=30).status_code == 404
    listed = requests.get(f"{p.url}/pod/api/v1/jobs/", timeout=30).json()["jobs"]
    assert [j["jid"] for j in listed] == [small["jid"]]
    filtered = requests.get(f"{p.url}/api/v1/jobs/?compute_resource=dock", timeout=30).json()
    assert {j["jid"] for j in filtered["jobs"]} == {big["jid"], named["jid"], pinned["jid"]}
    resources = requests.get(f"{p.url}/api/v1/resources/", timeout=30).json()["resources"]
    assert [(r["name"], r["backend"], r["healthy"]) for r in resources] == [
        ("pod", "podman", True),
        ("dock", "docker", True),
    ]
    assert resources[0]["description"] == "the podman service"
    assert resources[0]["capabilities"]["gpus"] is False
    assert resources[0]["caps"]["max_memory_limit"] == 100
    # status, logs and delete go to the job's own engine
    logs = requests.get(f"{p.url}/api/v1/{big['jid']}/logs/", timeout=30)
    assert logs.status_code == 200
    for jid, resource in expected.items():
        assert p.delete(jid).status_code == 204
        assert on_engine(engines[resource], jid) is None


def test_a_full_resource_overflows_only_when_it_allows_it(
    two: Callable[..., Pman], engines: dict[str, docker.APIClient]
) -> None:
    p = two(POD_PMAN_MAX_RUNNING="1", POD_PMAN_OVERFLOW="yes")
    holder = sleeper(p)
    assert p.post(holder).json()["compute_resource"] == "pod"
    passed = p.body()
    resp = p.post(passed)
    assert resp.status_code == 201 and resp.json()["compute_resource"] == "dock"
    assert p.wait(passed["jid"])["status"] == "finishedSuccessfully"
    assert on_engine(engines["dock"], passed["jid"]) is not None
    # a job that names the full resource waits in its queue
    waiting = p.body(compute_resource="pod")
    resp = p.post(waiting)
    assert resp.json()["status"] == "notstarted" and resp.json()["compute_resource"] == "pod"
    assert on_engine(engines["pod"], waiting["jid"]) is None
    assert p.delete(holder["jid"]).status_code == 204
    done = p.wait(waiting["jid"], timeout=120)
    assert done["status"] == "finishedSuccessfully" and done["compute_resource"] == "pod"
    assert on_engine(engines["pod"], waiting["jid"]) is not None


def test_each_resource_s_queue_survives_a_restart(
    two: Callable[..., Pman], engines: dict[str, docker.APIClient]
) -> None:
    first = two(POD_PMAN_MAX_RUNNING="1")
    holder, queued = sleeper(first), first.body()
    assert first.post(holder).json()["status"] == "started"
    resp = first.post(queued)
    assert resp.json()["status"] == "notstarted" and resp.json()["compute_resource"] == "pod"
    first.stop()
    second = two(first.storebase, POD_PMAN_MAX_RUNNING="1")
    second.jids += first.jids
    waiting = second.get(queued["jid"]).json()
    assert (waiting["status"], waiting["compute_resource"]) == ("notstarted", "pod")
    # the other resource's capacity is its own
    elsewhere = second.body(compute_resource="dock")
    assert second.post(elsewhere).json()["status"] == "started"
    resources = {
        r["name"]: r
        for r in requests.get(f"{second.url}/api/v1/resources/", timeout=30).json()["resources"]
    }
    assert (resources["pod"]["running"], resources["pod"]["queued"]) == (1, 1)
    assert second.delete(holder["jid"]).status_code == 204
    done = second.wait(queued["jid"], timeout=120)
    assert done["status"] == "finishedSuccessfully" and done["compute_resource"] == "pod"
    container = on_engine(engines["pod"], queued["jid"])
    assert container is not None and container["Config"]["Labels"][LABEL_RESOURCE] == "pod"
    assert second.wait(elsewhere["jid"])["status"] == "finishedSuccessfully"


def test_a_resource_whose_engine_is_unreachable_leaves_the_others_alone(
    make_pman: Callable[..., Pman], engines: dict[str, docker.APIClient], tmp_path: Path
) -> None:
    nobody = f"unix://{tmp_path / f'nobody-{uuid.uuid4().hex[:6]}.sock'}"
    p = make_pman(
        "docker",
        PMAN_RESOURCES="dock,dead",
        DEAD_DOCKER_HOST=nobody,
        PMAN_ENGINE_TIMEOUT="5",
    )
    try:
        health = requests.get(f"{p.url}/health", timeout=30)
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["status"] == "ok" and "dead" in body["message"]
        assert body["resources"]["dock"]["healthy"] is True
        assert body["resources"]["dead"]["healthy"] is False
        assert body["resources"]["dead"]["problem"]
        lost = p.body(compute_resource="dead")
        assert p.post(lost).status_code == 503
        fine = p.body()
        resp = p.post(fine)
        assert resp.status_code == 201 and resp.json()["compute_resource"] == "dock"
        assert p.wait(fine["jid"])["status"] == "finishedSuccessfully"
        listed = requests.get(f"{p.url}/api/v1/resources/", timeout=30).json()["resources"]
        assert [(r["name"], r["healthy"]) for r in listed] == [("dock", True), ("dead", False)]
        assert p.delete(fine["jid"]).status_code == 204
    finally:
        for jid in p.jids:
            with contextlib.suppress(docker.errors.APIError):
                engines["dock"].remove_container(jid, force=True)


def test_the_cli_shows_resources_and_sends_and_filters_by_resource(
    two: Callable[..., Pman], engines: dict[str, docker.APIClient]
) -> None:
    p = two()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PMAN_URL", "PMAN_TOKEN")}
        return subprocess.run(
            [sys.executable, "-m", "pman", "--url", p.url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    table = cli("resources")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "BACKEND", "HEALTH", "RUNNING", "QUEUED"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["pod", "podman", "ok"],
        ["dock", "docker", "ok"],
    ]
    as_json = json.loads(cli("resources", "--json").stdout)
    assert [r["name"] for r in as_json] == ["pod", "dock"]
    jid = f"cli-res-{uuid.uuid4().hex[:8]}"
    p.jids.append(jid)
    submitted = cli(
        "submit", "--jid", jid, "--image", TEST_IMAGE, "--entrypoint", "copyplugin",
        "--input-dir", "key-1/incoming", "--output-dir", "key-1/out-cli",
        "--compute-resource", "dock", "--wait", "--interval", "0.2", "--json",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["compute_resource"] == "dock"
    assert on_engine(engines["dock"], jid) is not None
    listed = json.loads(cli("list", "--compute-resource", "dock", "--json").stdout)
    assert [j["jid"] for j in listed] == [jid]
    assert json.loads(cli("list", "--compute-resource", "pod", "--json").stdout) == []
    refused = cli(
        "submit", "--image", TEST_IMAGE, "--entrypoint", "copyplugin",
        "--input-dir", "key-1/incoming", "--output-dir", "key-1/out-x",
        "--compute-resource", "nowhere",
    )  # fmt: skip
    assert refused.returncode == 2 and "compute_resource" in refused.stderr
