"""The OpenAPI document is valid 3.1 and describes what the service answers."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from pman.api.observe import route_template
from pman.errors import BackendUnavailable
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    return resp.get_json()


def check(doc: dict[str, Any], component: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{component}", "components": doc["components"]}
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


def test_document_is_valid_openapi_31(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_request_schema_matches_the_validator(doc: dict[str, Any]) -> None:
    check(doc, "JobRequest", job_body(cpu_limit="1000"))
    for bad in (job_body(cpu_limit=None), job_body(type="xx"), job_body(extra=1)):
        with pytest.raises(jsonschema.ValidationError):
            check(doc, "JobRequest", bad)
    required = set(doc["components"]["schemas"]["JobRequest"]["required"])
    assert required == set(job_body()) - {"args_path_flags", "env"}


def test_responses_match_their_schemas(
    client: FlaskClient, fake: FakeBackend, doc: dict[str, Any]
) -> None:
    check(doc, "ServerInfo", client.get("/api/v1/").get_json())
    created = client.post("/api/v1/", json=job_body(jid="o"))
    check(doc, "Job", created.get_json())
    check(doc, "Job", client.get("/api/v1/o/").get_json())
    check(doc, "Error", client.post("/api/v1/", json=job_body(cpu_limit=None)).get_json())
    check(doc, "Error", client.get("/api/v1/missing/").get_json())
    check(doc, "Health", client.get("/health").get_json())
    fake.fail_with = BackendUnavailable("down")
    check(doc, "Health", client.get("/health").get_json())


def test_every_route_is_documented(client: FlaskClient, doc: dict[str, Any]) -> None:
    app = client.application
    documented = {
        (path, method.upper())
        for path, ops in doc["paths"].items()
        for method in ops
        if method != "parameters"
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = route_template(rule.rule)  # /api/v1/<string:jid>/ -> /api/v1/{jid}/
        for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
            assert (path, method) in documented, (path, method)


def test_list_and_events_match_their_schemas(
    client: FlaskClient, doc: dict[str, Any], track: Any
) -> None:
    for i in range(3):
        client.post("/api/v1/", json=job_body(jid=f"l{i}"))
    track()
    listed = client.get("/api/v1/jobs/?limit=2")
    assert listed.status_code == 200
    check(doc, "JobList", listed.get_json())
    assert [j["jid"] for j in listed.get_json()["jobs"]] == ["l2", "l1"]
    nxt = client.get(f"/api/v1/jobs/?limit=2&cursor={listed.get_json()['next_cursor']}")
    assert [j["jid"] for j in nxt.get_json()["jobs"]] == ["l0"]
    assert nxt.get_json()["next_cursor"] is None
    events = client.get("/api/v1/l0/events/")
    check(doc, "JobEvents", events.get_json())
    for bad in ("status=nope", "limit=0", "limit=x", "cursor=zzz", "label=novalue"):
        resp = client.get(f"/api/v1/jobs/?{bad}")
        assert resp.status_code == 400, bad
        check(doc, "Error", resp.get_json())
