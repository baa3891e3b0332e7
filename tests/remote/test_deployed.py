"""A deployed pman (a Swarm stack, see test_swarm.sh), through HTTP only.

Job data is checked in the host folder the deployment shares as STOREBASE.
"""

from __future__ import annotations

import os

import requests

from tests.remote.conftest import Deployed


def test_server_info_names_the_backend(deployed: Deployed) -> None:
    resp = deployed.request("GET", "/api/v1/")
    assert resp.status_code == 200, resp.text
    info = resp.json()
    expected = os.environ.get("PMAN_EXPECT_CONTAINER_ENV")
    if expected:
        assert info["container_env"] == expected, info
    assert info["container_env"]
    assert info["storage_type"] == "host"
    assert info["server_version"]


def test_requests_without_the_token_are_refused(deployed: Deployed) -> None:
    resp = requests.get(f"{deployed.url}/api/v1/", timeout=30)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_health(deployed: Deployed) -> None:
    resp = deployed.request("GET", "/health")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ok"


def test_job_lifecycle_writes_its_output(deployed: Deployed) -> None:
    body = deployed.body(args=["--prefix", "out-"])
    resp = deployed.post(body)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["jid"] == body["jid"]
    assert created["status"] in ("notstarted", "started", "finishedSuccessfully")
    assert created["cmd"].endswith("--prefix out- /share/incoming /share/outgoing")

    done = deployed.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert (deployed.out(body) / "out-data.txt").read_text() == "some data\n"
    assert "copied data.txt -> out-data.txt" in done["logs"]

    events = deployed.request("GET", f"/api/v1/{body['jid']}/events/")
    assert events.status_code == 200, events.text
    states = [e["state"] for e in events.json()["events"]]
    assert states, events.json()
    assert states[-1] == "succeeded", states

    listed = deployed.request("GET", "/api/v1/jobs/", params={"auid": deployed.auid})
    assert listed.status_code == 200, listed.text
    jobs = {j["jid"]: j for j in listed.json()["jobs"]}
    assert jobs[body["jid"]]["state"] == "succeeded", jobs

    assert deployed.delete(body["jid"]).status_code == 204
    assert deployed.get(body["jid"]).status_code == 404
    assert deployed.delete(body["jid"]).status_code == 404
    listed = deployed.request("GET", "/api/v1/jobs/", params={"auid": deployed.auid})
    assert body["jid"] not in {j["jid"] for j in listed.json()["jobs"]}


def test_failing_job_reports_its_exit_code(deployed: Deployed) -> None:
    body = deployed.body("failplugin")
    assert deployed.post(body).status_code == 201
    done = deployed.wait(body["jid"])
    assert done["status"] == "finishedWithError", done
    assert "exited with code 3" in done["message"], done
    assert "failing on purpose" in done["logs"]

    listed = deployed.request(
        "GET", "/api/v1/jobs/", params={"auid": deployed.auid, "status": "finishedWithError"}
    )
    assert listed.status_code == 200, listed.text
    (job,) = listed.json()["jobs"]
    assert (job["jid"], job["state"], job["exit_code"]) == (body["jid"], "failed", 3)


def test_listing_is_paged(deployed: Deployed) -> None:
    bodies = [deployed.body(type="fs", args=[]) for _ in range(3)]
    for b in bodies:
        assert deployed.post(b).status_code == 201
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"auid": deployed.auid, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = deployed.request("GET", "/api/v1/jobs/", params=params)
        assert page.status_code == 200, page.text
        seen += [j["jid"] for j in page.json()["jobs"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(b["jid"] for b in bodies)
    for b in bodies:
        assert deployed.wait(b["jid"])["status"] == "finishedSuccessfully"


def test_bad_requests_are_400_and_unknown_jobs_404(deployed: Deployed) -> None:
    body = deployed.body()
    del body["image"]
    resp = deployed.post(body)
    assert resp.status_code == 400, resp.text
    assert "image" in resp.json()["fields"]

    escaping = deployed.body(output_dir="../outside")
    resp = deployed.post(escaping)
    assert resp.status_code == 400, resp.text
    assert "output_dir" in resp.json()["fields"]
    assert deployed.get(escaping["jid"]).status_code == 404

    resp = deployed.request("POST", "/api/v1/", data="not json")
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"]

    limit = deployed.request("GET", "/api/v1/jobs/", params={"limit": "0"})
    assert limit.status_code == 400, limit.text
    assert deployed.request("GET", "/api/v1/pman-remote-nosuchjob/events/").status_code == 404
