"""The cromwell backend through pman's HTTP API, against the Cromwell stand-in
(tests/standins/cromwell): each workflow really runs, with miniwdl, as swarm services
on the local Docker engine.

The stand-in needs miniwdl, the Docker engine as a swarm manager and the test
image; without them these tests skip on a laptop and fail in CI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.integration.conftest import Pman, engine_client, engine_missing

pytestmark = pytest.mark.cromwell

_MIB = 1024 * 1024
#: seconds of one stand-in "minute" of TIMELIMIT_MINUTES: a time limit test
#: need not wait a real one (every other job ends long before 30 of them)
MINUTE = 4.0


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        import WDL  # noqa: F401
    except ImportError:
        engine_missing("miniwdl is not installed (pip install -e '.[test]')")
    engine_client("swarm")  # Docker, the test image, and a swarm manager
    from tests.standins.cromwell.standin import CromwellStandIn

    s = CromwellStandIn(tmp_path_factory.mktemp("cromwell"), minute_seconds=MINUTE)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def cpman(standin: Any, make_pman: Callable[..., Pman]) -> Callable[..., Pman]:
    def make(**env: str) -> Pman:
        return make_pman("cromwell", CROMWELL_URL=standin.url, **env)

    return make


def workflow_of(standin: Any, jid: str) -> Any:
    """The stand-in's newest workflow carrying ``jid``."""
    found = [
        wf for wf in standin.workflows.values() if wf.labels.get("org.chrisproject.pman.jid") == jid
    ]
    assert found, f"no workflow for {jid}"
    return max(found, key=lambda wf: wf.submission)


def services_of(standin: Any) -> list[dict[str, Any]]:
    from tests.standins.cromwell.miniwdl_runner import STANDIN_LABEL

    api = engine_client("swarm")
    return api.services(filters={"label": f"{STANDIN_LABEL}={standin.instance}"})


def containers_of(standin: Any) -> list[dict[str, Any]]:
    from tests.standins.cromwell.miniwdl_runner import STANDIN_LABEL

    api = engine_client("swarm")
    return api.containers(all=True, filters={"label": f"{STANDIN_LABEL}={standin.instance}"})


def wait_for(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.2)


def test_lifecycle_output_logs_and_delete(standin: Any, cpman: Callable[..., Pman]) -> None:
    p = cpman(JOB_LABELS="team=pman-tests")
    body = p.body(
        args=["--prefix", "out-", "--env", "GREETING"],
        env=["GREETING=hello 'world' $HOME"],
    )
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "notstarted"
    jid = body["jid"]

    data = p.wait(jid, timeout=90)
    assert data["status"] == "finishedSuccessfully", data
    assert data["message"] == "exited with code 0"
    assert "copied data.txt -> out-data.txt" in data["logs"]
    assert data["logs"].rstrip().endswith("copyplugin: done")
    out = p.out(body)
    assert (out / "out-data.txt").read_text() == "some data\n"
    report = (out / "report.txt").read_text()
    assert "input read-only" in report
    # the environment reaches the command unchanged: no shell expansion
    assert "env GREETING=hello 'world' $HOME" in report

    wf = workflow_of(standin, jid)
    assert wf.status == "Succeeded"
    assert wf.labels["team"] == "pman-tests"
    assert wf.options["read_from_cache"] is False
    md = standin.metadata(wf)
    (call,) = md["calls"]["pman.plugin"]
    assert call["returnCode"] == 0
    attrs = call["runtimeAttributes"]
    assert attrs["cpu"] == "1" and attrs["memory"] == "128 MiB"
    assert attrs["runtime_minutes"] == "30" and attrs["maxRetries"] == "0"
    assert attrs["pman_outgoing"] == str(out)

    # DELETE: the finished workflow is unlabelled as pman's; twice is fine;
    # the jid may then be used again, by a new workflow
    assert p.delete(jid).status_code == 204
    assert wf.labels["org.chrisproject.pman"] == "deleted"
    assert p.get(jid).status_code == 404
    assert p.delete(jid).status_code == 404
    again = dict(body, args=["--prefix", "again-"])
    resp = p.post(again)
    assert resp.status_code == 201, resp.text
    data = p.wait(jid, timeout=90)
    assert data["status"] == "finishedSuccessfully", data
    assert (out / "again-data.txt").exists()
    assert workflow_of(standin, jid).id != wf.id


def test_failing_job_has_its_exit_code_and_message(
    standin: Any, cpman: Callable[..., Pman]
) -> None:
    p = cpman()
    body = p.body("failplugin")
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=90)
    assert data["status"] == "finishedWithError", data
    assert data["message"].startswith("exited with code 3: "), data
    assert "return code 3" in data["message"]  # Cromwell's failure message
    assert "failing on purpose" in data["logs"]
    rec = p.record(body["jid"])
    assert (rec.state.name, rec.exit_code, rec.reason) == ("FAILED", 3, "exit_code")


def test_memory_limit_takes_effect(standin: Any, cpman: Callable[..., Pman]) -> None:
    p = cpman()
    body = p.body("memhog", args=["--size", "256M"], memory_limit=32)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=90)
    assert data["status"] == "finishedWithError", data
    assert "exit code 137" in data["message"] and "32 MiB" in data["message"], data


def test_delete_aborts_a_running_job_and_leaves_no_container(
    standin: Any, cpman: Callable[..., Pman]
) -> None:
    p = cpman()
    body = p.body("sleeper", args=["120"], cpu_limit=1500, memory_limit=64)
    body["type"] = "fs"
    assert p.post(body).status_code == 201
    jid = body["jid"]
    p.wait(jid, until=("started",), timeout=60)
    wf = workflow_of(standin, jid)

    # its task runs as a swarm service with the job's limits and mounts
    def running_service() -> dict[str, Any] | None:
        for svc in services_of(standin):
            tasks = engine_client("swarm").tasks(filters={"service": svc["ID"]})
            if any(t["Status"]["State"] == "running" for t in tasks):
                return svc
        return None

    svc = wait_for(running_service, 60, "the job's task never ran")
    template = svc["Spec"]["TaskTemplate"]
    # cpu_limit 1500 millicores: Cromwell's cpu is whole cores, rounded up
    assert template["Resources"]["Limits"] == {"NanoCPUs": 2_000_000_000, "MemoryBytes": 64 * _MIB}
    mounts = {m["Target"]: m for m in template["ContainerSpec"]["Mounts"]}
    assert mounts["/share/incoming"].get("ReadOnly") is True
    assert mounts["/share/outgoing"]["Source"] == str(p.out(body))
    assert not mounts["/share/outgoing"].get("ReadOnly")

    started = time.monotonic()
    assert p.delete(jid).status_code == 204
    # at once: not after the job's 120 s (the abort is Cromwell's to carry out)
    assert time.monotonic() - started < 60
    assert standin.wait(wf.id, timeout=60) == "Aborted"
    assert wf.labels["org.chrisproject.pman"] == "deleted"
    wait_for(lambda: not services_of(standin), 60, "the job's swarm service is still there")
    wait_for(lambda: not containers_of(standin), 60, "the job's container is still there")
    assert p.get(jid).status_code == 404


def test_tracker_makes_one_query_per_cycle(standin: Any, cpman: Callable[..., Pman]) -> None:
    # the test drives the tracker itself, one cycle at a time
    p = cpman(PMAN_TRACKER="false")
    tracker = p.service.tracker
    bodies = [p.body("sleeper", args=["4"], type="fs") for _ in range(3)]
    for b in bodies:
        assert p.post(b).status_code == 201
    tracker.run_once()  # the first cycle also reconciles (one more query)
    cycles = 0
    before = {path: standin.count(path) for path in ("/query", "/metadata", "/logs")}
    deadline = time.monotonic() + 90
    while not all(p.record(b["jid"]).state.finished for b in bodies):
        assert time.monotonic() < deadline, [p.record(b["jid"]) for b in bodies]
        q = standin.count("/query")
        report = tracker.run_once()
        cycles += 1
        assert standin.count("/query") - q == 1, "one query per cycle, whatever the number of jobs"
        assert report.engine_calls >= 1
        time.sleep(0.3)
    after = {path: standin.count(path) - n for path, n in before.items()}
    assert after["/query"] == cycles
    # each job's status and logs once it ended (or started): never per job and cycle
    assert after["/metadata"] <= 2 * len(bodies), after
    assert after["/logs"] == len(bodies), after
    for b in bodies:
        rec = p.record(b["jid"])
        assert rec.state.name == "SUCCEEDED", rec
        assert "sleeper: woke up" in (rec.logs or "")


def test_two_workers_are_two_shards(standin: Any, cpman: Callable[..., Pman]) -> None:
    p = cpman()
    script = (
        'echo "worker $PMAN_WORKER_INDEX of $PMAN_NUMBER_OF_WORKERS"; '
        'echo "$PMAN_WORKER_INDEX" > "$2/worker-$PMAN_WORKER_INDEX"'
    )
    body = p.body(entrypoint=["sh", "-c", script, "sh"], args=[], number_of_workers=2)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"], timeout=90)
    assert data["status"] == "finishedSuccessfully", data
    assert data["message"] == "all 2 workers exited with 0"
    assert sorted(f.name for f in p.out(body).iterdir()) == ["worker-0", "worker-1"]
    assert "[worker 0] worker 0 of 2" in data["logs"]
    assert "[worker 1] worker 1 of 2" in data["logs"]


def test_time_limit_and_missing_gpu(standin: Any, cpman: Callable[..., Pman]) -> None:
    p = cpman(TIMELIMIT_MINUTES="1")  # one stand-in minute: MINUTE seconds
    slow = p.body("sleeper", args=["60"], type="fs")
    gpu = p.body(gpu_limit=1)
    for b in (slow, gpu):
        assert p.post(b).status_code == 201
    data = p.wait(slow["jid"], timeout=60)
    assert data["status"] == "finishedWithError", data
    assert "time limit of 1 minutes" in data["message"], data
    assert p.record(slow["jid"]).reason == "time_limit"
    data = p.wait(gpu["jid"], timeout=60)
    assert data["status"] == "finishedWithError", data
    assert "no GPU" in data["message"] and "could not run" in data["message"], data
    assert p.record(gpu["jid"]).state.name == "SYSTEM_ERROR"


def test_invalid_submissions_are_400(standin: Any, cpman: Callable[..., Pman]) -> None:
    p = cpman()
    # an auid over 255 characters, which Cromwell refuses as a label value, is
    # refused by pman's own validation first (at most 150 characters)
    resp = p.post(p.body(auid="a" * 300))
    assert resp.status_code == 400, resp.text
    assert "auid" in resp.json()["fields"], resp.text
    # pman refuses what it cannot pass on: a variable the shell cannot set
    resp = p.post(p.body(env=["NOT-A-NAME=1"]))
    assert resp.status_code == 400 and "env" in resp.json()["fields"], resp.text
    # a jid a Cromwell label query cannot carry
    resp = p.post(p.body(jid="has:colon"))
    assert resp.status_code == 400 and "jid" in resp.json()["fields"], resp.text
    # nothing was submitted, nothing recorded
    assert not [w for w in standin.workflows.values() if w.labels.get(
        "org.chrisproject.pman.auid") == "a" * 300]  # fmt: skip


def test_what_cromwell_can_never_run_is_400_and_never_recorded(
    standin: Any, cpman: Callable[..., Pman]
) -> None:
    """An environment the shell cannot set is refused before anything is
    recorded, also when the job would wait in pman's queue; Cromwell never
    sees it. (The request schema refuses such a name first; the backend's
    check refuses it again for a submit that does not come through the API.)"""
    p = cpman(PMAN_MAX_RUNNING="1")

    def refused() -> None:
        body = p.body(env=["NOT-A-NAME=1"])
        resp = p.post(body)
        assert resp.status_code == 400, resp.text
        assert "env" in resp.json()["fields"], resp.text
        assert p.get(body["jid"]).status_code == 404
        jids = [w.labels.get("org.chrisproject.pman.jid") for w in standin.workflows.values()]
        assert body["jid"] not in jids

    refused()
    # the one place taken: a job that can run waits in pman's queue, this one does not
    sleeper = p.body("sleeper", args=["60"], type="fs")
    assert p.post(sleeper).status_code == 201
    waiting = p.post(p.body())
    assert waiting.status_code == 201 and waiting.json()["status"] == "notstarted", waiting.text
    assert waiting.json()["message"].startswith("queued by pman"), waiting.text
    refused()


def test_standin_answers_like_cromwell(standin: Any) -> None:
    """The stand-in's own contract, on the paths pman does not exercise."""
    base = f"{standin.url}/api/workflows/v1"
    bad = requests.post(
        base, files={"workflowSource": ("w.wdl", "version 1.0\nworkflow {", "text/plain")}
    )
    assert bad.status_code == 400
    assert bad.json()["status"] == "fail" and bad.json()["message"]
    missing = requests.post(
        base,
        files={
            "workflowSource": ("w.wdl", "version 1.0\nworkflow w { input { Int n } }\n"),
            "workflowInputs": ("i.json", "{}"),
        },
    )
    assert missing.status_code == 400 and "w.n" in missing.json()["message"], missing.text
    unknown = "0b3b1c3e-1d7a-4f3e-9a43-6f1d3f0a0a0a"
    for method, path in (
        ("GET", "status"),
        ("GET", "metadata"),
        ("GET", "logs"),
        ("GET", "labels"),
        ("POST", "abort"),
    ):
        assert requests.request(method, f"{base}/{unknown}/{path}").status_code == 404
        assert requests.request(method, f"{base}/not-a-uuid/{path}").status_code == 400
    assert requests.get(f"{base}/query", params={"bogus": "1"}).status_code == 400
    assert requests.get(f"{base}/query", params={"status": "Nope"}).status_code == 400

    # a held workflow, released, queried by POST, aborted before it ran
    held = requests.post(
        base,
        files={
            "workflowSource": ("w.wdl", "version 1.0\nworkflow w { }\n"),
            "labels": ("l.json", '{"case": "held"}'),
            "workflowOnHold": (None, "true"),
        },
    )
    assert held.status_code == 201 and held.json()["status"] == "On Hold", held.text
    wid = held.json()["id"]
    found = requests.post(
        f"{base}/query",
        json=[
            {"label": "case:held"},
            {"status": "On Hold"},
            {"additionalQueryResultFields": "labels"},
        ],
    ).json()
    assert found["totalResultsCount"] == 1 and found["results"][0]["labels"]["case"] == "held"
    assert requests.post(f"{base}/{wid}/abort").json()["status"] == "Aborted"
    ended = requests.post(f"{base}/{wid}/abort")
    assert ended.status_code == 403
    assert requests.get(f"{base}/{wid}/status").json() == {"id": wid, "status": "Aborted"}
    assert requests.get(f"{standin.url}/engine/v1/version").json()["cromwell"]
    assert requests.get(f"{standin.url}/engine/v1/status").status_code == 200


def test_cromwell_unreachable_is_503(make_pman: Callable[..., Pman]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = make_pman("cromwell", CROMWELL_URL=f"http://127.0.0.1:{port}")
    resp = p.post(p.body())
    assert resp.status_code == 503, resp.text
    assert f"127.0.0.1:{port}" in resp.json()["message"]
    assert requests.get(f"{p.url}/health", timeout=30).status_code == 503


def test_cancel_aborts_and_logs_stream(cpman: Callable[..., Pman], standin: Any) -> None:
    """POST cancel aborts the workflow (kept, with its files); GET logs streams
    the task's stdout and stderr, following until the workflow ends."""
    p = cpman()
    body = p.body(entrypoint=["sh", "-c", "echo started-work; sleep 300", "job"], args=[])
    jid = body["jid"]
    assert p.post(body).status_code == 201

    def logs(query: str = "") -> requests.Response:
        return requests.get(f"{p.url}/api/v1/{jid}/logs/?{query}", timeout=60)

    wait_for(lambda: b"started-work" in logs().content, 120, "the task wrote its line")
    resp = requests.post(f"{p.url}/api/v1/{jid}/cancel/", timeout=60)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["status"], resp.json()["message"]) == ("finishedWithError", "cancelled")
    wait_for(lambda: workflow_of(standin, jid).status == "Aborted", 60, "the workflow aborted")
    p.service.tracker.run_once()
    assert p.get(jid).json()["message"] == "cancelled"
    assert logs().text == "started-work\n"
    assert logs("since=2026-01-01T00:00:00Z").status_code == 400

    body = p.body(
        entrypoint=["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.5; done", "job"],
        args=[],
    )
    assert p.post(body).status_code == 201
    jid = body["jid"]
    with requests.get(f"{p.url}/api/v1/{jid}/logs/?follow=true", stream=True, timeout=120) as r:
        lines = [line.decode() for line in r.iter_lines()]
    assert lines == ["tick 1", "tick 2", "tick 3"]
    assert logs("tail=1").text == "tick 3\n"
