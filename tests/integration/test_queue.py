"""pman's capacity queue (PMAN_MAX_RUNNING) against a real Docker engine: a
burst waits in pman, not on the engine, and runs in order; the queue is in the
registry, so it survives a restart of pman."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from pman.backends.docker import parse_engine_time
from pman.labels import LABEL_MANAGED
from pman.models import JobState
from tests.integration.conftest import FINISHED, Pman

pytestmark = pytest.mark.docker


def running_containers(p: Pman, jids: list[str]) -> list[str]:
    assert p.engine is not None
    found = p.engine.containers(filters={"label": f"{LABEL_MANAGED}=true", "status": "running"})
    return [name.lstrip("/") for c in found for name in c["Names"] if name.lstrip("/") in jids]


def test_a_burst_runs_one_at_a_time_in_submission_order(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("docker", PMAN_MAX_RUNNING="1")
    # the first runs long enough that the other two are answered while it runs
    bodies = [p.body("sleeper", args=[s], type="fs") for s in ("3", "1", "1")]
    jids = [b["jid"] for b in bodies]
    answers = [p.post(b) for b in bodies]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [a.json()["status"] for a in answers] == ["started", "notstarted", "notstarted"]
    assert answers[2].json()["message"].startswith("queued by pman: 1 job ahead")
    assert p.container(jids[1]) is None and p.container(jids[2]) is None, "not on the engine"

    most = 0
    deadline = time.monotonic() + 60
    while not all(p.get(j).json()["status"] in FINISHED for j in jids):
        most = max(most, len(running_containers(p, jids)))
        assert time.monotonic() < deadline, [p.get(j).json() for j in jids]
        time.sleep(0.05)
    assert most == 1, "never more than PMAN_MAX_RUNNING containers at once"
    for jid in jids:
        data = p.get(jid).json()
        assert data["status"] == "finishedSuccessfully", data
        assert "sleeper: woke up" in data["logs"]
    # in order, each after the one before it ended
    states = [p.container(j)["State"] for j in jids]  # type: ignore[index]
    for before, after in itertools.pairwise(states):
        assert parse_engine_time(after["StartedAt"]) >= parse_engine_time(before["FinishedAt"])


def test_the_queue_survives_a_restart_of_pman(make_pman: Callable[..., Pman]) -> None:
    first = make_pman("docker", PMAN_MAX_RUNNING="1")
    running, waiting = first.body("sleeper", args=["2"], type="fs"), first.body()
    assert first.post(running).json()["status"] == "started"
    assert first.post(waiting).json()["status"] == "notstarted"
    first.stop()  # pman goes away with a job in its queue
    # the running one ends while nobody watches
    deadline = time.monotonic() + 60
    while (first.container(running["jid"]) or {}).get("State", {}).get("Status") != "exited":
        assert time.monotonic() < deadline, first.container(running["jid"])
        time.sleep(0.1)
    assert first.container(waiting["jid"]) is None
    second = make_pman("docker", storebase=first.storebase, PMAN_MAX_RUNNING="1")
    second.jids += first.jids
    rec = second.wait_record(waiting["jid"], timeout=60)
    assert rec.state is JobState.SUCCEEDED, rec
    assert (second.out(waiting) / "out-data.txt").read_text() == "some data\n"
    assert second.record(running["jid"]).state is JobState.SUCCEEDED


def test_delete_of_a_queued_job_never_touches_the_engine(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("docker", PMAN_MAX_RUNNING="1")
    # the running one runs until deleted below, so the others stay queued till then
    running = p.body("sleeper", args=["300"], type="fs")
    waiting, after = (p.body("sleeper", args=["1"], type="fs") for _ in range(2))
    for b in (running, waiting, after):
        assert p.post(b).status_code == 201
    assert p.delete(waiting["jid"]).status_code == 204
    assert p.get(waiting["jid"]).status_code == 404
    assert p.get(after["jid"]).json()["message"].startswith("queued by pman: 0 jobs ahead")
    assert p.delete(running["jid"]).status_code == 204
    assert p.wait(after["jid"], timeout=60)["status"] == "finishedSuccessfully"
    assert p.container(waiting["jid"]) is None, "the deleted job never ran"
    events = p.service.registry.events(p.service.registry.latest(waiting["jid"]).id)
    assert [e.state for e in events][-1] is JobState.CANCELLED
