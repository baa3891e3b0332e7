"""What an operator sees of pman: the docs page, /metrics, request ids and logs."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pman.api.docs import ASSETS
from pman.app import create_app
from pman.errors import BackendUnavailable, ConfigError
from pman.metrics import RequestTally
from pman.models import JobState
from pman.settings import load_settings
from pman.telemetry import JID, REQUEST_ID, JsonFormatter, TextFormatter, install_record_factory
from pman.tracker import CycleReport
from tests.helpers import job_body
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend

TOKEN = "m" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def authed(storebase: Path, tmp_path: Path, fake: FakeBackend) -> FlaskClient:
    """A pman with authentication on, as deployed."""
    settings = make_settings(storebase, tmp_path, PMAN_AUTH="token", PMAN_AUTH_TOKENS=TOKEN)
    return create_app(settings=settings, backend=fake).test_client()


def parse_text(text: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def scrape(client: FlaskClient, headers: dict[str, str] | None = None) -> dict[tuple, float]:
    """/metrics as {(sample name, sorted labels...): value}."""
    resp = client.get("/metrics", headers=headers or {})
    assert resp.status_code == 200, resp.text
    assert resp.content_type.startswith("text/plain")
    return parse_text(resp.text)


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (a
    sample may carry more: the compute resource, since issue 15)."""
    want = set(labels.items())
    return sum(v for (n, *pairs), v in samples.items() if n == name and want <= set(pairs))


# ---------------------------------------------------------------- docs page
def test_docs_page_and_its_files_need_no_credentials_and_nothing_remote(
    authed: FlaskClient,
) -> None:
    page = authed.get("/api/v1/docs/")
    assert page.status_code == 200
    assert page.content_type.startswith("text/html")
    html = page.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, html
    # nothing from a CDN: every file is pman's own, beside the page
    for ref in refs:
        assert "//" not in ref and not ref.startswith("/"), ref
        resp = authed.get(f"/api/v1/docs/{ref}")
        assert resp.status_code == 200, ref
        assert len(resp.data) > 100, ref
    assert {"swagger-ui-bundle.js", "swagger-ui.css"} <= set(refs) <= ASSETS
    assert "http://" not in html and "https://" not in html
    # the page reads pman's document (relative: works behind a path prefix) and
    # sends nothing to Swagger's online validator
    assert '"url": "../openapi.json"' in html and '"validatorUrl": null' in html
    assert authed.get("/api/v1/openapi.json").status_code == 200
    # redirected to the page, still without credentials
    assert authed.get("/api/v1/docs").status_code in (301, 308)


def test_the_documents_bearer_scheme_is_what_authorize_uses(authed: FlaskClient) -> None:
    doc = authed.get("/api/v1/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert doc["security"] == [{"bearer": []}]
    for path in ("/api/v1/docs/", "/api/v1/docs/{asset}", "/api/v1/openapi.json"):
        assert doc["paths"][path]["get"]["security"] == []
    assert "security" not in doc["paths"]["/metrics"]["get"]  # needs the token


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/docs/../openapi.json",
        "/api/v1/docs/..%2F..%2Fdocs.py",
        "/api/v1/docs/%2e%2e/%2e%2e/pman/settings/__init__.py",
        "/api/v1/docs/../../etc/passwd",
        "/api/v1/docs/__init__.py",
        "/api/v1/docs/flask_swagger_ui.py",
        "/api/v1/docs/LICENSE",
        "/api/v1/docs/oauth2-redirect.html",
        "/api/v1/docs/.",
        "/api/v1/docs/..",
    ],
)
def test_docs_files_no_traversal(authed: FlaskClient, path: str) -> None:
    for headers in ({}, AUTH):
        resp = authed.get(path, headers=headers)
        assert resp.status_code in (400, 401, 404), (path, resp.status_code)
        assert b"root:" not in resp.data and b"import" not in resp.data


def test_open_docs_prefix_opens_no_job(authed: FlaskClient, fake: FakeBackend) -> None:
    assert authed.post("/api/v1/", json=job_body(jid="secret-job"), headers=AUTH).status_code == 201
    for path in (
        "/api/v1/docs/../secret-job/",
        "/api/v1/docs/secret-job/",
        "/api/v1/docs/x/../../secret-job/",
    ):
        resp = authed.get(path)
        assert resp.status_code in (401, 404), path
        assert b"secret-job" not in resp.data
    # and nothing but GET is open
    assert authed.delete("/api/v1/docs/swagger-ui.css").status_code == 401
    assert authed.post("/api/v1/openapi.json").status_code == 401
    assert "secret-job" in fake.jobs


def test_docs_is_no_jid(client: FlaskClient) -> None:
    resp = client.post("/api/v1/", json=job_body(jid="docs"))
    assert resp.status_code == 400 and "jid" in resp.get_json()["fields"]


# ---------------------------------------------------------------- /metrics
def test_metrics_need_credentials(authed: FlaskClient) -> None:
    assert authed.get("/metrics").status_code == 401
    samples = scrape(authed, AUTH)
    assert ("pman_queue_length",) in samples


def test_metrics_follow_jobs_requests_and_engine_calls(
    client: FlaskClient, fake: FakeBackend, track: Callable[[], CycleReport]
) -> None:
    before = scrape(client)
    assert value(before, "pman_jobs", backend="fake", state="running") == 0
    assert client.post("/api/v1/", json=job_body(jid="m-1")).status_code == 201
    fake.logs_text["m-1"] = "hello\n"
    for _ in range(3):
        assert client.get("/api/v1/m-1/").status_code == 200  # the poll fast path
    assert client.get("/api/v1/nope-9/").status_code == 404
    track()
    running = scrape(client)
    assert value(running, "pman_jobs", backend="fake", state="running") == 1
    assert value(running, "pman_jobs", backend="fake", state="succeeded") == 0
    poll = {"method": "GET", "route": "/api/v1/{jid}/"}
    got = "pman_http_requests_total"
    assert value(running, got, code="200", **poll) - value(before, got, code="200", **poll) == 3
    assert value(running, got, code="404", **poll) - value(before, got, code="404", **poll) == 1
    posts = {"method": "POST", "route": "/api/v1/", "code": "201"}
    assert value(running, got, **posts) - value(before, got, **posts) == 1
    count = "pman_http_request_duration_seconds_count"
    assert value(running, count, **poll) - value(before, count, **poll) == 4
    calls = "pman_engine_call_duration_seconds_count"
    for op in ("submit", "list_active"):
        d = value(running, calls, backend="fake", operation=op)
        assert d - value(before, calls, backend="fake", operation=op) >= 1, op

    fake.set_state("m-1", JobState.SUCCEEDED, exit_code=0)
    track()
    done = scrape(client)
    assert value(done, "pman_jobs", backend="fake", state="running") == 0
    assert value(done, "pman_jobs", backend="fake", state="succeeded") == 1
    assert value(done, calls, backend="fake", operation="get") > value(
        running, calls, backend="fake", operation="get"
    )
    cycles = "pman_tracker_cycles_total"
    assert value(done, cycles, result="ok") - value(before, cycles, result="ok") == 2
    assert 0 <= value(done, "pman_tracker_lag_seconds") < 3600
    # a jid is never a label value: routes are templates
    text = client.get("/metrics").text
    assert "m-1" not in text and "nope-9" not in text


def test_queue_length_counts_jobs_waiting_in_pmans_queue(
    storebase: Path, tmp_path: Path, fake: FakeBackend
) -> None:
    settings = make_settings(storebase, tmp_path, PMAN_MAX_RUNNING="1")
    client = create_app(settings=settings, backend=fake).test_client()
    for jid in ("q-1", "q-2", "q-3"):
        assert client.post("/api/v1/", json=job_body(jid=jid)).status_code == 201
    samples = scrape(client)
    # q-1 went to the engine; q-2 and q-3 wait in pman's queue
    assert value(samples, "pman_queue_length") == 2
    assert value(samples, "pman_jobs", backend="fake", state="queued") == 2


def test_engine_errors_counted_by_operation_and_kind(
    client: FlaskClient, fake: FakeBackend
) -> None:
    errors = "pman_engine_errors_total"
    labels = {"backend": "fake", "operation": "submit", "kind": "BackendUnavailable"}
    before = value(scrape(client), errors, **labels)
    fake.fail_with = BackendUnavailable("the engine is down")
    assert client.post("/api/v1/", json=job_body()).status_code == 503
    after = scrape(client)
    assert value(after, errors, **labels) - before == 1
    assert value(after, "pman_http_requests_total", method="POST", route="/api/v1/", code="503")


def test_unmatched_and_unauthenticated_requests_are_counted_by_template(
    authed: FlaskClient,
) -> None:
    before = scrape(authed, AUTH)
    authed.get("/api/v1/some-jid/")  # 401 before any route ran
    authed.get("/no/such/path/some-jid")
    after = scrape(authed, AUTH)
    got = "pman_http_requests_total"
    poll = {"method": "GET", "route": "/api/v1/{jid}/", "code": "401"}
    assert value(after, got, **poll) - value(before, got, **poll) == 1
    unmatched = {"method": "GET", "route": "unmatched", "code": "401"}
    assert value(after, got, **unmatched) - value(before, got, **unmatched) == 1
    assert "some-jid" not in authed.get("/metrics", headers=AUTH).text


def test_request_tally_writes_what_observe_would() -> None:
    tally = RequestTally(flush_every=3600)
    for seconds in (0.0004, 0.0005, 0.003, 100.0):
        tally.observe("GET", "/tally-test", "200", seconds)
    tally.flush()
    text = generate_latest(REGISTRY).decode()
    samples = parse_text(text)
    labels = {"method": "GET", "route": "/tally-test"}
    bucket = "pman_http_request_duration_seconds_bucket"
    expected = {"0.0005": 2, "0.001": 2, "0.005": 3, "10.0": 3, "+Inf": 4}
    for le, n in expected.items():
        assert value(samples, bucket, le=le, **labels) == n, le
    assert value(samples, "pman_http_request_duration_seconds_count", **labels) == 4
    assert value(samples, "pman_http_request_duration_seconds_sum", **labels) == pytest.approx(
        100.0039
    )
    assert value(samples, "pman_http_requests_total", code="200", **labels) == 4
    tally.flush()  # nothing pending: nothing counted twice
    again = parse_text(generate_latest(REGISTRY).decode())
    assert value(again, "pman_http_requests_total", code="200", **labels) == 4


# ---------------------------------------------------------------- request ids and logs
def test_request_id_echoed_when_sane_else_made(authed: FlaskClient, client: FlaskClient) -> None:
    assert client.post("/api/v1/", json=job_body(jid="r-1")).status_code == 201
    made: list[str] = []
    for c, path in (
        (authed, "/api/v1/"),  # 401
        (client, "/api/v1/r-1/"),  # fast path
        (client, "/api/v1/"),  # Flask
        (client, "/api/v1/missing/"),  # 404
    ):
        resp = c.get(path, headers={"X-Request-ID": "pfcon-42.a:b_c"})
        assert resp.headers["X-Request-ID"] == "pfcon-42.a:b_c", path
        made.append(c.get(path).headers["X-Request-ID"])
    for insane in ("a b", "x" * 129, "<script>", "id\x7f", ""):
        made.append(
            client.get("/api/v1/", headers={"X-Request-ID": insane}).headers["X-Request-ID"]
        )
    # new ones: unique, and sane themselves
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made), made


def test_log_lines_of_a_request_carry_its_id_and_jid(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        resp = client.post(
            "/api/v1/", json=job_body(jid="logged-1"), headers={"X-Request-ID": "req-77"}
        )
        client.get("/api/v1/logged-1/", headers={"X-Request-ID": "req-78"})
        client.delete("/api/v1/logged-1/", headers={"X-Request-ID": "req-79"})
    assert resp.status_code == 201
    submitted = [r for r in caplog.records if "submitted" in r.getMessage()]
    assert submitted and all(r.request_id == "req-77" for r in submitted)  # type: ignore[attr-defined]
    access = {r.request_id: r for r in caplog.records if r.name == "pman.access"}  # type: ignore[attr-defined]
    assert set(access) >= {"req-77", "req-78", "req-79"}
    assert access["req-78"].route == "/api/v1/{jid}/"  # type: ignore[attr-defined]
    assert access["req-78"].jid == "logged-1"  # type: ignore[attr-defined]
    assert access["req-79"].status == 204  # type: ignore[attr-defined]
    deleted = [r for r in caplog.records if r.getMessage() == "job logged-1 deleted"]
    assert deleted[0].jid == "logged-1" and deleted[0].request_id == "req-79"  # type: ignore[attr-defined]
    # the context ends with the request
    assert REQUEST_ID.get() == "" and JID.get() == ""


def test_access_log_off(storebase: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(storebase, tmp_path, PMAN_ACCESS_LOG="no")
    c = create_app(settings=settings, backend=FakeBackend()).test_client()
    with caplog.at_level(logging.INFO):
        assert c.get("/api/v1/").status_code == 200
    assert not [r for r in caplog.records if r.name == "pman.access"]


def test_tokens_never_logged(authed: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        authed.get("/api/v1/", headers=AUTH)
        authed.get("/api/v1/", headers={"Authorization": "Bearer wrong-token-value"})
        authed.post("/api/v1/", json=job_body(), headers=AUTH)
    assert caplog.records
    for record in caplog.records:
        line = JsonFormatter().format(record)
        assert TOKEN not in line and "wrong-token-value" not in line


def test_json_lines() -> None:
    install_record_factory()
    token = REQUEST_ID.set("rid-1")
    jid_token = JID.set("job-1")
    try:
        record = logging.getLogger("pman.test").makeRecord(
            "pman.test",
            logging.WARNING,
            __file__,
            1,
            "engine said %s\nover two lines",
            ("no",),
            None,
            extra={"status": 503, "route": "/api/v1/{jid}/"},
        )
    finally:
        JID.reset(jid_token)
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out: dict[str, Any] = json.loads(line)
    assert out["level"] == "WARNING" and out["logger"] == "pman.test"
    assert out["message"] == "engine said no\nover two lines"
    assert out["request_id"] == "rid-1" and out["jid"] == "job-1"
    assert out["status"] == 503 and out["route"] == "/api/v1/{jid}/"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out["ts"])
    text = TextFormatter().format(record)
    assert "request_id=rid-1" in text and "jid=job-1" in text


def test_log_format_setting(tmp_path: Path) -> None:
    base = {"STOREBASE": str(tmp_path), "PMAN_AUTH": "none"}
    assert load_settings(base).core.log_format == "json"
    assert load_settings({**base, "APPLICATION_MODE": "development"}).core.log_format == "text"
    assert load_settings({**base, "PMAN_LOG_FORMAT": "text"}).core.log_format == "text"
    with pytest.raises(ConfigError) as e:
        load_settings({**base, "PMAN_LOG_FORMAT": "xml", "PMAN_ACCESS_LOG": "maybe"})
    assert {"PMAN_LOG_FORMAT", "PMAN_ACCESS_LOG"} <= set(e.value.fields)
