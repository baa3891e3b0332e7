"""Webhooks through a real pman (local backend, real job processes) to a
receiver the test runs on 127.0.0.1: signed deliveries of every transition,
retries, delivery after a restart, the Slack format."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.integration.conftest import Pman
from tests.webhook_receiver import Receiver, delivered_states

pytestmark = pytest.mark.local

SECRET = secrets.token_hex(32)
#: retries come quickly here; the defaults (1 s doubling up to 300 s) are for real receivers
FAST = {
    "PMAN_WEBHOOK_SECRET": SECRET,
    "PMAN_WEBHOOK_BACKOFF_BASE": "0.05",
    "PMAN_WEBHOOK_BACKOFF_CAP": "0.2",
}

#: a job running long enough for the tracker to see it running (a quick one may
#: be seen queued, then finished: fewer transitions)
SLOW = ["--sleep", "1", "--prefix", "out-"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def deliveries(p: Pman, jid: str) -> list[dict]:
    resp = requests.get(f"{p.url}/api/v1/{jid}/webhooks/", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["deliveries"]


def wait_deliveries(
    p: Pman, jid: str, predicate: Callable[[list[dict]], bool], timeout: float = 60
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = deliveries(p, jid)
        if predicate(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {jid}: {got}")
        time.sleep(0.1)


def test_every_transition_is_posted_signed_to_the_callback_and_the_global_hook(
    make_pman: Callable[..., Pman], receiver: Receiver
) -> None:
    p = make_pman("local", PMAN_WEBHOOK_URL=f"{receiver.url}/global", **FAST)
    body = p.body(callback_url=f"{receiver.url}/job", args=SLOW)
    assert p.post(body).status_code == 201
    jid = body["jid"]
    p.wait(jid)
    assert p.delete(jid).status_code == 204
    # the transitions are the registry's events
    events = requests.get(f"{p.url}/api/v1/{jid}/events/", timeout=30).json()["events"]
    states = [e["state"] for e in events]
    assert states[0] == "queued" and states[-2:] == ["succeeded", "succeeded"]  # then deleted
    for path in ("/job", "/global"):
        got = receiver.wait_for(path, lambda r: len(delivered_states(r)) == len(states))
        assert delivered_states(got) == states
        assert all(r.verified(SECRET) for r in got), "every delivery is signed"
        assert not any(r.verified("another secret") for r in got)
        assert all(r.headers["Content-Type"] == "application/json" for r in got)
    job = [r.json for r in receiver.at("/job")]
    assert set(job[0]) == {"jid", "status", "state", "message", "exit_code", "at", "event_id"}
    assert [(b["jid"], b["status"], b["at"]) for b in job] == [
        (jid, e["status"], e["at"]) for e in events
    ]
    assert job[0]["status"] == "notstarted" and job[-1]["status"] == "finishedSuccessfully"
    assert job[-2]["exit_code"] == 0 and job[-2]["message"] == "exited with code 0"
    assert job[-1]["message"] == "deleted"
    # both targets got the same transitions, and the event id says which
    ids = [r.event_id for r in receiver.at("/job")]
    assert ids == [r.event_id for r in receiver.at("/global")] and len(set(ids)) == len(states)
    assert [b["event_id"] for b in job] == ids
    # the API shows each delivery; the global hook's URL is not shown
    shown = wait_deliveries(p, jid, lambda d: all(x["state"] == "delivered" for x in d))
    assert len(shown) == 2 * len(states) and all(x["attempts"] == 1 for x in shown)
    assert {x["url"] for x in shown} == {f"{receiver.url}/job", None}


def test_a_delivery_is_retried_until_the_receiver_takes_it(
    make_pman: Callable[..., Pman], receiver: Receiver
) -> None:
    receiver.failures = [500, 500]  # then 200
    p = make_pman("local", **FAST)
    body = p.body(callback_url=f"{receiver.url}/job", args=SLOW)
    assert p.post(body).status_code == 201
    jid = body["jid"]
    p.wait(jid)
    events = requests.get(f"{p.url}/api/v1/{jid}/events/", timeout=30).json()["events"]
    states = [e["state"] for e in events]
    got = receiver.wait_for("/job", lambda r: len(delivered_states(r)) == len(states))
    first = [r for r in got if r.json["state"] == "queued"]
    assert len(first) == 3, "delivered on the third attempt"
    assert len({r.event_id for r in first}) == 1, "a retry is the same delivery"
    assert all(r.verified(SECRET) for r in got), "every attempt signed with its own timestamp"
    # a receiver gets a job's transitions in order: the next waited for the first
    assert [r.json["state"] for r in got] == ["queued"] * 3 + states[1:]
    shown = wait_deliveries(p, jid, lambda d: all(x["state"] == "delivered" for x in d))
    assert [x["attempts"] for x in shown] == [3] + [1] * (len(states) - 1)


def test_a_transition_recorded_before_a_restart_is_delivered_after_it(
    make_pman: Callable[..., Pman], receiver: Receiver
) -> None:
    port = receiver.port
    receiver.stop()  # the receiver is down: every attempt is refused
    first = make_pman("local", **FAST)
    body = first.body(callback_url=f"http://127.0.0.1:{port}/job", args=SLOW)
    assert first.post(body).status_code == 201
    jid = body["jid"]
    first.wait(jid)
    tried = wait_deliveries(
        first, jid, lambda d: d[-1]["event_state"] == "succeeded" and d[0]["attempts"] >= 2
    )
    assert all(x["state"] == "pending" for x in tried)
    assert "refused" in tried[0]["last_error"].lower()
    states = [x["event_state"] for x in tried]  # queued, (running,) succeeded
    first.stop()  # pman stops with every delivery still to make
    back = Receiver(port)
    try:
        second = make_pman("local", storebase=first.storebase, **FAST)
        got = back.wait_for("/job", lambda r: len(delivered_states(r)) == len(states))
        assert delivered_states(got) == states
        assert all(r.verified(SECRET) and r.json["jid"] == jid for r in got)
        assert got[-1].json["status"] == "finishedSuccessfully"
        wait_deliveries(second, jid, lambda d: all(x["state"] == "delivered" for x in d))
    finally:
        back.stop()


def test_the_global_hook_can_speak_slack(
    make_pman: Callable[..., Pman], receiver: Receiver
) -> None:
    p = make_pman(
        "local", PMAN_WEBHOOK_URL=f"{receiver.url}/slack", PMAN_WEBHOOK_FORMAT="slack", **FAST
    )
    body = p.body(plugin="failplugin", callback_url=f"{receiver.url}/job")
    assert p.post(body).status_code == 201
    jid = body["jid"]
    p.wait(jid)
    # (a job this quick may be seen failed without having been seen running)
    slack = receiver.wait_for(
        "/slack", lambda r: bool(r) and "finishedWithError" in r[-1].json["text"]
    )
    assert all(set(r.json) == {"text"} for r in slack), "Slack takes {'text': ...}"
    assert slack[-1].json["text"] == (
        f"pman: job `{jid}` is finishedWithError (failed, exit code 3): exited with code 3"
    )
    assert all(r.verified(SECRET) for r in slack)
    # a job's own callback still gets pman's JSON
    job = receiver.wait_for("/job", lambda r: bool(r) and r[-1].json["state"] == "failed")
    assert job[-1].json["exit_code"] == 3 and job[-1].json["state"] == "failed"


def test_callbacks_need_webhooks_configured_and_an_allowed_host(
    make_pman: Callable[..., Pman],
) -> None:
    plain = make_pman("local")
    resp = plain.post(plain.body(callback_url="http://127.0.0.1:9/x"))
    assert resp.status_code == 400
    assert "PMAN_WEBHOOK_SECRET" in resp.json()["message"]
    strict = make_pman("local", PMAN_WEBHOOK_ALLOWED_HOSTS="hooks.example.org", **FAST)
    resp = strict.post(strict.body(callback_url="http://127.0.0.1:9/x"))
    assert resp.status_code == 400 and resp.json()["fields"] == {"callback_url": "host not allowed"}
    resp = strict.post(strict.body(callback_url="ftp://hooks.example.org/x"))
    assert resp.status_code == 400 and "http" in resp.json()["fields"]["callback_url"]
    # nothing was recorded for the refused requests
    assert requests.get(f"{strict.url}/api/v1/jobs/", timeout=30).json()["jobs"] == []
