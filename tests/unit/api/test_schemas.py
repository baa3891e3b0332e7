"""Every request rule of DESIGN.md §3, one by one, through the HTTP API."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


def post(client: FlaskClient, body: Any) -> Any:
    return client.post("/api/v1/", json=body)


def assert_rejected(resp: Any, field: str, fake: FakeBackend) -> None:
    assert resp.status_code == 400, resp.get_json()
    data = resp.get_json()
    assert field in data["fields"], data
    assert field in data["message"]
    assert "submit" not in fake.calls, "nothing may be created for a rejected request"


def test_valid_request_is_created(client: FlaskClient, fake: FakeBackend) -> None:
    resp = post(client, job_body(jid="job-1"))
    assert resp.status_code == 201
    assert resp.get_json()["jid"] == "job-1"
    assert fake.calls == ["submit"]


@pytest.mark.parametrize(
    "field",
    [
        "jid",
        "args",
        "auid",
        "number_of_workers",
        "cpu_limit",
        "memory_limit",
        "gpu_limit",
        "image",
        "entrypoint",
        "type",
        "input_dir",
        "output_dir",
    ],
)
def test_each_required_field_is_required(
    client: FlaskClient, fake: FakeBackend, field: str
) -> None:
    body = job_body()
    del body[field]
    resp = post(client, body)
    assert_rejected(resp, field, fake)
    assert resp.get_json()["fields"][field] == "field required"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cpu_limit", None),
        ("memory_limit", None),
        ("cpu_limit", 1.5),
        ("memory_limit", "12.5"),
        ("gpu_limit", "two"),
        ("number_of_workers", 0),
        ("number_of_workers", True),
        ("gpu_limit", -1),
        ("args", "--foo bar"),
        ("args", [1, 2]),
        ("args_path_flags", "--mask"),
        ("entrypoint", []),
        ("entrypoint", "python3"),
        ("entrypoint", [""]),
        ("env", ["NOEQUALS"]),
        ("env", ["=value"]),
        ("env", "A=1"),
        ("type", "xs"),
        ("type", None),
        ("jid", None),
        ("jid", "/"),
        ("jid", 12),
        ("image", ""),
        ("auid", None),
        ("args", ["ok", "nul\x00byte"]),
        ("output_dir", "out\x00put"),
        ("env", ["A=\x00"]),
    ],
)
def test_bad_values_are_400_with_the_field_named(
    client: FlaskClient, fake: FakeBackend, field: str, value: Any
) -> None:
    assert_rejected(post(client, job_body(**{field: value})), field, fake)


@pytest.mark.parametrize("value", ["1000", " 1000 ", 1000, 1000.0])
def test_integer_fields_accept_integer_strings(
    client: FlaskClient, fake: FakeBackend, value: Any
) -> None:
    resp = post(client, job_body(jid="ints", cpu_limit=value, memory_limit=value))
    assert resp.status_code == 201, resp.get_json()
    assert fake.specs["ints"].resources.cpu_limit == 1000
    assert fake.specs["ints"].resources.memory_limit == 1000


def test_unknown_field_is_rejected(client: FlaskClient, fake: FakeBackend) -> None:
    assert_rejected(post(client, job_body(cpu_limt=1000)), "cpu_limt", fake)


def test_leading_slash_of_jid_is_stripped(client: FlaskClient, fake: FakeBackend) -> None:
    resp = post(client, job_body(jid="/chris-jid-7"))
    assert resp.status_code == 201
    assert resp.get_json()["jid"] == "chris-jid-7"
    assert "chris-jid-7" in fake.specs


@pytest.mark.parametrize("jid", ["has space", "semi;colon", "-leading-dash", "a" * 129, "ü"])
def test_jid_the_engine_cannot_use_is_400(client: FlaskClient, fake: FakeBackend, jid: str) -> None:
    assert_rejected(post(client, job_body(jid=jid)), "jid", fake)


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "null", '"text"'])
def test_body_must_be_a_json_object(client: FlaskClient, fake: FakeBackend, body: str) -> None:
    resp = client.post("/api/v1/", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert "JSON object" in resp.get_json()["message"]
    assert fake.calls == []


def test_all_problems_reported_together(client: FlaskClient, fake: FakeBackend) -> None:
    resp = post(client, job_body(cpu_limit=None, type="zz", env="x"))
    assert resp.status_code == 400
    assert set(resp.get_json()["fields"]) == {"cpu_limit", "type", "env"}


def test_env_and_defaults_reach_the_backend(client: FlaskClient, fake: FakeBackend) -> None:
    body = job_body(jid="envs", env=["A=1", "B=x=y", "C="])
    del body["args_path_flags"]
    assert post(client, body).status_code == 201
    assert fake.specs["envs"].env == ["A=1", "B=x=y", "C="]
