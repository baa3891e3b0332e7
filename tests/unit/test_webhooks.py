"""Webhooks without a network: signing, URLs, settings, the registry's outbox,
the deliverer's retries and ordering (its POSTs go to a recording session),
the callback_url field of the API."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from pman.app import create_app
from pman.errors import ConfigError
from pman.models import JobRequest, JobState
from pman.registry import Registry, webhook_deliveries
from pman.settings.webhooks import check_webhook_url, host_allowed, parse_allowed_hosts
from pman.webhooks import Deliverer, backoff, sign, verify
from tests.helpers import job_body
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend

SECRET = "s" * 40


# ---------------------------------------------------------------- signing, URLs
def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"jid":"x"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == f"sha256={expected}"
    sig = sign(SECRET, 1700000000, body)
    assert verify(SECRET, "1700000000", sig, body, now=1700000100)
    assert not verify(SECRET, "1700000000", sig, body + b" ", now=1700000100), "body changed"
    assert not verify(SECRET, "1700000001", sig, body, now=1700000100), "timestamp changed"
    assert not verify("other" * 8, "1700000000", sig, body, now=1700000100), "other key"
    assert not verify(SECRET, "1700000000", sig, body, now=1700000000 + 301), "a replay"
    assert not verify(SECRET, None, sig, body) and not verify(SECRET, "x", sig, body)


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://host/x", "http:// or https://"),
        ("http:///path", "must name a host"),
        ("http://host:99999/", "not a URL"),
        ("http://host/a b", "spaces"),
        ("http://host/" + "a" * 2100, "at most 2048"),
    ],
)
def test_bad_webhook_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_webhook_url(url)


def test_host_allowlist() -> None:
    allowed = parse_allowed_hosts("hooks.example.org, *.chris.org")
    assert host_allowed("https://hooks.example.org/x", allowed)
    assert host_allowed("https://HOOKS.example.org./x", allowed)
    assert host_allowed("https://ci.chris.org:8443/x", allowed)
    assert not host_allowed("https://chris.org.evil.net/x", allowed)
    assert not host_allowed("http://127.0.0.1/x", allowed)
    assert not host_allowed("http://hooks.example.org@127.0.0.1/x", allowed), "userinfo"
    assert host_allowed("http://127.0.0.1/x", parse_allowed_hosts("*"))
    with pytest.raises(ValueError):
        parse_allowed_hosts("good.org, bad/host")


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    low, high = (lambda: 0.0), (lambda: 0.999999)
    assert [backoff(n, 1.0, 300.0, low) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(20, 1.0, 300.0, high) == pytest.approx(300.0, rel=1e-5)
    assert backoff(20, 1.0, 300.0, low) == 150.0


# ---------------------------------------------------------------- settings
def test_webhook_settings_are_checked(storebase: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        make_settings(
            storebase,
            tmp_path,
            PMAN_WEBHOOK_URL="gopher://x",
            PMAN_WEBHOOK_FORMAT="xml",
            PMAN_WEBHOOK_MAX_ATTEMPTS="0",
            PMAN_WEBHOOK_ALLOWED_HOSTS="a b",
        )
    assert set(e.value.fields) >= {
        "PMAN_WEBHOOK_URL",
        "PMAN_WEBHOOK_FORMAT",
        "PMAN_WEBHOOK_MAX_ATTEMPTS",
        "PMAN_WEBHOOK_ALLOWED_HOSTS",
    }
    with pytest.raises(ConfigError) as e:
        make_settings(storebase, tmp_path, PMAN_WEBHOOK_URL="https://hooks.example.org/x")
    assert "required with PMAN_WEBHOOK_URL" in e.value.fields["PMAN_WEBHOOK_SECRET"]
    with pytest.raises(ConfigError) as e:
        make_settings(storebase, tmp_path, PMAN_WEBHOOK_SECRET="short")
    assert "at least 32" in e.value.fields["PMAN_WEBHOOK_SECRET"]
    s = make_settings(
        storebase,
        tmp_path,
        PMAN_WEBHOOK_URL="https://hooks.slack.com/services/T0/B0/xoxb-secret-part",
        PMAN_WEBHOOK_SECRET=SECRET,
        PMAN_WEBHOOK_FORMAT="slack",
    )
    hooks = s.webhooks
    assert (hooks.format, hooks.allowed_hosts, hooks.max_attempts) == (
        "slack",
        ("*",),
        10,
    )
    assert "xoxb-secret-part" not in repr(s) and SECRET not in repr(s), "secrets stay out of logs"


# ---------------------------------------------------------------- fingerprint, API
def test_a_request_without_callback_keeps_its_old_fingerprint() -> None:
    request = JobRequest(**job_body(jid="fp"))
    fields = asdict(request)
    del fields["callback_url"]
    before = hashlib.sha256(
        json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:32]
    assert request.fingerprint() == before, "jobs recorded by an older pman still match"
    with_callback = JobRequest(**job_body(jid="fp", callback_url="http://h/x"))
    assert with_callback.fingerprint() != before


@pytest.fixture
def hooked(storebase: Path, tmp_path: Path, fake: FakeBackend) -> FlaskClient:
    settings = make_settings(
        storebase,
        tmp_path,
        PMAN_WEBHOOK_SECRET=SECRET,
        PMAN_WEBHOOK_URL="http://global.example/hook",
        PMAN_WEBHOOK_ALLOWED_HOSTS="hooks.example.org",
    )
    return create_app(settings=settings, backend=fake).test_client()


def test_callback_url_is_part_of_the_request(hooked: FlaskClient, fake: FakeBackend) -> None:
    body = job_body(jid="cb", callback_url="https://hooks.example.org/a")
    assert hooked.post("/api/v1/", json=body).status_code == 201
    assert hooked.post("/api/v1/", json=body).status_code == 200, "a safe retry"
    other = {**body, "callback_url": "https://hooks.example.org/b"}
    assert hooked.post("/api/v1/", json=other).status_code == 409
    none = {k: v for k, v in body.items() if k != "callback_url"}
    assert hooked.post("/api/v1/", json=none).status_code == 409
    assert "callback_url" not in str(fake.specs["cb"].env), "no engine sees it"


@pytest.mark.parametrize(
    "callback, field_problem",
    [
        ("https://elsewhere.example/x", "host not allowed"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        (42, "Input should be a valid string"),
        ("https://hooks.example.org/" + "a" * 2048, "at most 2048 characters"),
    ],
)
def test_bad_callbacks_are_400_naming_the_field(
    hooked: FlaskClient, fake: FakeBackend, callback: Any, field_problem: str
) -> None:
    resp = hooked.post("/api/v1/", json=job_body(jid="bad", callback_url=callback))
    assert resp.status_code == 400
    assert field_problem in resp.get_json()["fields"]["callback_url"]
    assert "bad" not in fake.jobs


def test_without_a_secret_callbacks_are_refused(client: FlaskClient) -> None:
    resp = client.post("/api/v1/", json=job_body(callback_url="https://h.example/x"))
    assert resp.status_code == 400
    assert "PMAN_WEBHOOK_SECRET" in resp.get_json()["message"]


# ---------------------------------------------------------------- the outbox
def outbox(registry: Registry) -> list[dict[str, Any]]:
    with registry.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(webhook_deliveries)).mappings()]


def test_each_transition_queues_one_delivery_per_target(
    hooked: FlaskClient, fake: FakeBackend
) -> None:
    registry = hooked.application.extensions["pman"].service.registry
    hooked.post("/api/v1/", json=job_body(jid="cb", callback_url="https://hooks.example.org/a"))
    hooked.post("/api/v1/", json=job_body(jid="plain"))
    fake.set_state("cb", JobState.FAILED, exit_code=3, message="exited with code 3")
    hooked.application.extensions["pman"].service.tracker.run_once()
    assert hooked.delete("/api/v1/cb/").status_code == 204
    rows = [(r["payload"]["jid"], r["target"], r["payload"]["state"]) for r in outbox(registry)]
    cb = [(t, s) for j, t, s in rows if j == "cb"]
    assert cb == [
        ("callback", "queued"),
        ("global", "queued"),
        ("callback", "running"),
        ("global", "running"),
        ("callback", "failed"),
        ("global", "failed"),
        ("callback", "failed"),  # the deletion
        ("global", "failed"),
    ]
    assert [t for j, t, _ in rows if j == "plain"] == ["global", "global"]
    failed = next(r for r in outbox(registry) if r["payload"]["state"] == "failed")
    assert failed["payload"]["exit_code"] == 3 and failed["state"] == "pending"


def test_a_failed_submission_leaves_no_delivery(hooked: FlaskClient, fake: FakeBackend) -> None:
    fake.fail_with = RuntimeError("engine exploded")
    hooked.post("/api/v1/", json=job_body(jid="x", callback_url="https://hooks.example.org/a"))
    registry = hooked.application.extensions["pman"].service.registry
    assert outbox(registry) == []


def test_an_older_registry_gets_the_new_column(tmp_path: Path) -> None:
    """A registry made before callback_url existed is upgraded at start-up."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    registry = Registry.from_url(url)
    with registry.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX IF EXISTS jobs_one_active_jid")
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN callback_url")
        # as releases before the migrations made it: no version table, no phase
        conn.exec_driver_sql("DROP TABLE pman_alembic_version")
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN phase")
    registry.close()
    registry = Registry.from_url(url)
    with registry.engine.connect() as conn:
        names = [r[1] for r in conn.exec_driver_sql("PRAGMA table_info(jobs)")]
    assert "callback_url" in names
    assert registry.list().records == []
    Registry.from_url(url).close()  # a second start finds nothing to add
    registry.close()


# ---------------------------------------------------------------- the deliverer
class Recorder:
    """A requests.Session stand-in: answers each URL from its list of statuses, then 200."""

    def __init__(self, statuses: dict[str, list[int | Exception]] | None = None) -> None:
        self.statuses = statuses or {}
        self.posts: list[tuple[str, dict[str, Any], dict[str, str], bool]] = []

    def post(self, url: str, data: bytes, headers: dict[str, str], **kw: Any) -> Any:
        self.posts.append((url, json.loads(data), headers, kw["allow_redirects"]))
        script = self.statuses.get(url) or []
        status = script.pop(0) if script else 200
        if isinstance(status, Exception):
            raise status
        resp = requests.Response()
        resp.raw = io.BytesIO()
        resp.status_code = status
        resp.reason = "whatever"
        return resp


def deliverer(app_client: FlaskClient, session: Recorder, **kw: Any) -> Deliverer:
    registry = app_client.application.extensions["pman"].service.registry
    options = {"backoff_base": 0.0, "backoff_cap": 0.0, **kw}
    return Deliverer(registry, secret=SECRET, instance="inst", session=session, **options)  # type: ignore[arg-type]


def test_deliverer_retries_then_gives_up(hooked: FlaskClient) -> None:
    session = Recorder(
        {
            "https://hooks.example.org/a": [500, requests.ConnectionError("refused"), 302],
            "http://global.example/hook": [503],
        }
    )
    d = deliverer(hooked, session, max_attempts=3)
    hooked.post("/api/v1/", json=job_body(jid="r", callback_url="https://hooks.example.org/a"))
    # per receiver, a job's transitions go in order: only the oldest is tried
    rounds: Callable[[], int] = d.run_once
    assert [rounds() for _ in range(5)] == [2, 2, 2, 1, 0]
    resp = hooked.get("/api/v1/r/webhooks/").get_json()
    by = {(x["target"], x["event_state"]): x for x in resp["deliveries"]}
    callback_first = by[("callback", "queued")]
    assert (callback_first["state"], callback_first["attempts"]) == ("failed", 3)
    assert callback_first["last_error"] == "HTTP 302 whatever", "a redirect is not followed"
    assert (by[("global", "queued")]["state"], by[("global", "queued")]["attempts"]) == (
        "delivered",
        2,
    )
    assert by[("global", "queued")]["last_error"] == ""
    assert by[("global", "queued")]["url"] is None, "the operator's URL is not shown"
    assert all(allow is False for *_, allow in session.posts)
    # the callback's queued event failed for good: its next one was sent after it
    urls_states = [(u, b["state"]) for u, b, _, _ in session.posts]
    assert urls_states.index(("https://hooks.example.org/a", "running")) > 4


def test_deliverer_signs_and_shapes_each_body(hooked: FlaskClient) -> None:
    session = Recorder()
    d = deliverer(hooked, session, global_format="slack")
    hooked.post("/api/v1/", json=job_body(jid="s", callback_url="https://hooks.example.org/a"))
    while d.run_once():
        pass
    by_url = {}
    for url, body, headers, _ in session.posts:
        raw = json.dumps(body, separators=(",", ":")).encode()
        assert verify(SECRET, headers["X-Pman-Timestamp"], headers["X-Pman-Signature"], raw)
        by_url.setdefault(url, []).append((body, headers["X-Pman-Event-Id"]))
    job = by_url["https://hooks.example.org/a"]
    slack = by_url["http://global.example/hook"]
    assert [b["status"] for b, _ in job] == ["notstarted", "started"]
    assert [e for _, e in job] == [e for _, e in slack] == ["inst-1", "inst-2"]
    assert slack[1][0] == {"text": "pman: job `s` is started (running): started"}


def test_deliverer_waits_for_a_submission_in_flight(hooked: FlaskClient, fake: FakeBackend) -> None:
    session = Recorder()
    d = deliverer(hooked, session)
    service = hooked.application.extensions["pman"].service
    from pman.jobs import build_spec

    request = JobRequest(**job_body(jid="w", callback_url="https://hooks.example.org/a"))
    record = service.registry.create(build_spec(request, service.settings, service.storage), "f")
    assert d.run_once() == 0, "it may yet be forgotten"
    service.registry.forget(record.id)
    assert d.run_once() == 0 and session.posts == []


def test_the_deliveries_endpoint_matches_its_schema(hooked: FlaskClient) -> None:
    import jsonschema

    doc = hooked.get("/api/v1/openapi.json").get_json()
    hooked.post("/api/v1/", json=job_body(jid="o", callback_url="https://hooks.example.org/a"))
    schema = {"$ref": "#/components/schemas/WebhookDeliveries", "components": doc["components"]}
    body = hooked.get("/api/v1/o/webhooks/").get_json()
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    assert [d["state"] for d in body["deliveries"]] == ["pending"] * 4
    missing = hooked.get("/api/v1/nope/webhooks/")
    assert missing.status_code == 404
