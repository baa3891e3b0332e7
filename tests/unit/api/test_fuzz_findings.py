"""Regression tests for what the fuzzer (tests/integration/test_fuzz.py) and
the traversal tests (tests/integration/test_traversal.py) found, one per bug."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask.testing import FlaskClient

from pman.api.openapi import openapi_document
from pman.errors import UnsupportedOption
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


def post(client: FlaskClient, **overrides: Any) -> Any:
    return client.post("/api/v1/", json=job_body(**overrides))


def request_schema() -> dict[str, Any]:
    doc = openapi_document()
    return {"$ref": "#/components/schemas/JobRequest", "components": doc["components"]}


def test_a_folder_name_too_long_for_the_filesystem_is_400_not_500(
    client: FlaskClient, fake: FakeBackend
) -> None:
    # was: OSError ENAMETOOLONG from Path.exists() in Storage.resolve -> 500
    for value in ("a" * 300, "/".join(["b" * 200] * 30)):
        resp = post(client, output_dir=value)
        assert resp.status_code == 400, resp.get_json()
        assert "output_dir" in resp.get_json()["fields"]
    assert "submit" not in fake.calls


@pytest.mark.parametrize("field", ["output_dir", "input_dir", "auid", "image", "jid"])
def test_an_unpaired_surrogate_is_400_not_500(
    client: FlaskClient, fake: FakeBackend, field: str
) -> None:
    # was: UnicodeEncodeError when the path was encoded for the filesystem
    # (output_dir) or the record written (auid) -> 500
    resp = post(client, **{field: "x\ud800"})
    assert resp.status_code == 400, resp.get_json()
    assert field in resp.get_json()["fields"]
    assert "submit" not in fake.calls


def test_args_with_an_unpaired_surrogate_are_400(client: FlaskClient, fake: FakeBackend) -> None:
    # was: accepted (201), then the job could not be started: an argv must encode
    resp = post(client, args=["\udcff"])
    assert resp.status_code == 400
    assert "args" in resp.get_json()["fields"]


@pytest.mark.parametrize(
    ("field", "minimum"), [("number_of_workers", 1), ("cpu_limit", 1), ("gpu_limit", 0)]
)
def test_integer_strings_the_document_allows_are_exactly_those_accepted(
    client: FlaskClient, fake: FakeBackend, field: str, minimum: int
) -> None:
    # was: the document allowed "0" for number_of_workers (its string pattern
    # had no minimum) and the service accepted "-0" and other scripts' digits
    # ("\u0661\u0660\u0660\u0660") which the document's pattern did not allow
    schema = request_schema()
    samples = [
        "0",
        "1",
        "+2",
        " 7 ",
        "00",
        "-0",
        "-1",
        "\u0661\u0660\u0660\u0660",
        "1\u00a0",
        "1e3",
        "",
    ]
    for i, text in enumerate(samples):
        body = job_body(jid=f"{field}-{i}", **{field: text})
        try:
            jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
            documented = True
        except jsonschema.ValidationError:
            documented = False
        # gpu_limit > 0 is a fine request that the fake backend simply runs
        accepted = post(client, **body).status_code == 201
        assert accepted == documented, (field, text, accepted, documented)


def test_jobs_route_allows_only_get(client: FlaskClient) -> None:
    # was: /api/v1/jobs/ also matched /api/v1/<jid>/, so OPTIONS listed DELETE
    # and DELETE /api/v1/jobs/ was a 404 "no job named 'jobs'"
    for path in ("/api/v1/jobs/", "/api/v1/openapi.json"):
        assert client.delete(path).status_code == 405
        allow = client.options(path).headers["Allow"]
        assert set(re.split(r",\s*", allow)) == {"GET", "HEAD", "OPTIONS"}, (path, allow)
    assert client.get("/api/v1/jobsx/").status_code == 404
    assert client.delete("/api/v1/jobs-1/").status_code == 404


def test_a_refused_job_leaves_no_output_folder(
    client: FlaskClient, fake: FakeBackend, storebase: Path
) -> None:
    # was: the output folder was created before the engine refused the job
    # (a program not in the image, GPUs it cannot give) and stayed behind
    fake.fail_with = UnsupportedOption("no GPUs here", fields={"gpu_limit": "no"})
    resp = post(client, output_dir="new/deeper/out")
    assert resp.status_code == 400
    assert not (storebase / "new").exists()
    # a folder that was there before stays
    (storebase / "key-1" / "kept").mkdir()
    assert post(client, output_dir="key-1/kept/out").status_code == 400
    assert (storebase / "key-1" / "kept").is_dir()
    assert not (storebase / "key-1" / "kept" / "out").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_dir", "\uff0e\uff0e\uff0f\uff0e\uff0e\uff0foutside"),
        ("input_dir", "key-1/\u202eemocni"),
        ("output_dir", "out\u200bput"),
        ("output_dir", "caf\u0065\u0301"),
        ("output_dir", "\ufb01le"),
        ("image", "\uff0e\uff0e\uff0fx"),
        ("image", "fnndsc/../../x"),
        ("image", "with space"),
        ("auid", "../../outside"),
        ("auid", "\uff0e\uff0e"),
        ("env", ["A/B=1"]),
        ("env", ["\uff21=1"]),
    ],
)
def test_look_alike_and_traversal_names_are_400(
    client: FlaskClient, fake: FakeBackend, storebase: Path, field: str, value: Any
) -> None:
    # were: accepted (201); harmless to pman, but a name that NFKC or a
    # terminal turns into something else misleads whoever reads it next
    before = sorted(storebase.rglob("*"))
    resp = post(client, **{field: value})
    assert resp.status_code == 400, resp.get_json()
    assert field in resp.get_json()["fields"]
    assert sorted(storebase.rglob("*")) == before
    assert "submit" not in fake.calls


def test_plain_names_stay_accepted(client: FlaskClient, fake: FakeBackend) -> None:
    resp = post(
        client,
        jid="plain-1",
        auid="jane.doe@example.org",
        image="ghcr.io/fnndsc/pl-dircopy:2.1.1",
        env=["HOME=/tmp", "_X=ü €"],
        output_dir="key-1/outgoing/r\u00e9sum\u00e9",
        args=["--title", "Ünïcode \u202e text is fine here"],
    )
    assert resp.status_code == 201, resp.get_json()
