"""The calls the cromwell backend makes, against a faked server, and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pman.backends import load_backend
from pman.backends.cromwell import CromwellBackend
from pman.errors import ConfigError, InvalidJobSpec, JobExists, JobNotFound, UnsupportedOption
from pman.models import JobState
from pman.settings import load_settings
from tests.unit.backends.cromwell.fakes import (
    JID,
    MANAGED,
    NONE,
    URL,
    WID,
    FakeSession,
    backend,
    found,
    md,
    settings,
    spec,
)


def test_list_is_one_query_by_label(tmp_path: Path) -> None:
    s = FakeSession(("GET", "/query", 200, found()), ("GET", "/query", 200, found()))
    b = backend(tmp_path, s)
    assert [i.name for i in b.list()] == ["job-1"]
    assert [i.state for i in b.list_active()] == [JobState.RUNNING]
    assert len(s.calls) == 2
    assert s.calls[0][2] == [
        ("label", f"{MANAGED}:true"),
        ("additionalQueryResultFields", "labels"),
    ]
    statuses = [v for k, v in s.calls[1][2] if k == "status"]
    assert statuses == ["Submitted", "Running", "Aborting", "On Hold"]


def test_get_uses_the_id_a_query_found(tmp_path: Path) -> None:
    labels = {MANAGED: "true", JID: "job-1"}
    s = FakeSession(
        ("GET", "/query", 200, found()),
        ("GET", "/metadata", 200, md("Running", labels=labels)),
    )
    b = backend(tmp_path, s)
    b.list_active()
    assert b.get("job-1").state is JobState.RUNNING
    assert [c[0:2] for c in s.calls][1] == ("GET", f"/api/workflows/v1/{WID}/metadata")
    # a deleted job's jid taken again: the remembered workflow is not it any more
    s.answers += [
        ("GET", "/metadata", 200, md("Aborted", labels={MANAGED: "deleted", JID: "job-1"})),
        ("GET", "/query", 200, NONE),
    ]
    with pytest.raises(JobNotFound):
        b.get("job-1")


def test_submit_posts_the_form_and_refuses_a_taken_jid(tmp_path: Path) -> None:
    s = FakeSession(
        ("GET", "/query", 200, NONE),
        ("POST", "/api/workflows/v1", 201, {"id": WID, "status": "Submitted"}),
    )
    info = backend(tmp_path, s).submit(spec(tmp_path))
    assert (info.state, info.native_id) == (JobState.QUEUED, WID)
    s = FakeSession(("GET", "/query", 200, found()))
    with pytest.raises(JobExists) as e:
        backend(tmp_path, s).submit(spec(tmp_path))
    assert e.value.existing is not None and e.value.existing.native_id == WID


def test_env_names_the_shell_cannot_set_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOption) as e:
        backend(tmp_path, FakeSession()).submit(spec(tmp_path, env=["OK=1", "NOT-OK=2"]))
    assert "env" in e.value.fields and "NOT-OK" in e.value.message


def test_check_refuses_without_asking_the_server(tmp_path: Path) -> None:
    b = backend(tmp_path, FakeSession())  # any call would fail the test
    with pytest.raises(UnsupportedOption) as e:
        b.check(spec(tmp_path, env=["OK=1", "1BAD=2"]))
    assert "env" in e.value.fields and "'1BAD'" in e.value.message
    b.check(spec(tmp_path, workers=3))


@pytest.mark.parametrize(
    ("status", "calls"),
    [
        ("Running", ["GET /query", "POST /abort", "PATCH /labels"]),
        ("Succeeded", ["GET /query", "PATCH /labels"]),
    ],
)
def test_delete_aborts_if_needed_and_unlabels(
    tmp_path: Path, status: str, calls: list[str]
) -> None:
    s = FakeSession(
        ("GET", "/query", 200, found(status)),
        ("POST", "/abort", 200, {"id": WID, "status": "Aborting"}),
        ("PATCH", "/labels", 200, {"id": WID, "labels": {MANAGED: "deleted"}}),
    )
    backend(tmp_path, s).delete("job-1")
    assert [f"{m} /{p.rsplit('/', 1)[1]}" for m, p, _ in s.calls] == calls
    assert s.calls[-1][2] == {MANAGED: "deleted"}


def test_delete_of_a_job_that_ended_meanwhile_or_is_unknown(tmp_path: Path) -> None:
    s = FakeSession(
        ("GET", "/query", 200, found("Running")),
        ("POST", "/abort", 403, {"status": "error", "message": "in terminal state Succeeded"}),
        ("PATCH", "/labels", 200, {"id": WID, "labels": {}}),
    )
    backend(tmp_path, s).delete("job-1")
    s = FakeSession(("GET", "/query", 200, NONE))
    backend(tmp_path, s).delete("job-1")
    assert len(s.calls) == 1


def test_settings_and_names(tmp_path: Path) -> None:
    b = load_backend("cromwell", settings(tmp_path))  # no network at start-up
    assert isinstance(b, CromwellBackend) and b.describe() == f"Cromwell server at {URL}"
    b.check_name("x" * 255)
    for bad in ("x" * 256, "has:colon", "has/slash", "-dash"):
        with pytest.raises(InvalidJobSpec):
            b.check_name(bad)
    with pytest.raises(ConfigError) as e:
        load_settings({"CONTAINER_ENV": "cromwell", "STOREBASE": str(tmp_path)})
    assert "CROMWELL_URL" in e.value.fields
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, CROMWELL_URL="cromwell:8000")
    assert "CROMWELL_URL" in e.value.fields
    with pytest.raises(ConfigError) as e:
        load_backend(
            "cromwell",
            settings(tmp_path, CONTAINER_USER="1000:1000", SHM_SIZE="64", IGNORE_LIMITS="yes"),
        )
    assert {"CONTAINER_USER", "SHM_SIZE", "IGNORE_LIMITS"} <= set(e.value.fields)
