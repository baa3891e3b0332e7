"""Path confinement: every way out of STOREBASE is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from pman.errors import InvalidJobSpec
from pman.settings import Settings
from pman.storage import Storage, normalise_relative
from tests.helpers import job_body
from tests.unit.fakes import FakeBackend


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("key/incoming", "key/incoming"),
        ("/key/incoming/", "key/incoming"),
        ("key//./incoming", "key/incoming"),
    ],
)
def test_normalise(value: str, expected: str) -> None:
    assert normalise_relative("input_dir", value, allow_empty=False) == expected


@pytest.mark.parametrize("value", ["..", "../etc", "key/../../etc", "/a/../..", "a/.."])
def test_dotdot_is_refused(value: str) -> None:
    with pytest.raises(InvalidJobSpec) as e:
        normalise_relative("output_dir", value, allow_empty=False)
    assert e.value.fields == {"output_dir": "'..' is not allowed"}


@pytest.mark.parametrize("value", ["", "/", ".", "//./"])
def test_empty_output_dir_is_refused(value: str) -> None:
    with pytest.raises(InvalidJobSpec) as e:
        normalise_relative("output_dir", value, allow_empty=False)
    assert "output_dir" in e.value.fields


def test_symlink_escaping_storebase_is_refused(settings: Settings, storebase: Path) -> None:
    outside = storebase.parent / "outside"
    outside.mkdir()
    os.symlink(outside, storebase / "key-1" / "evil")
    storage = Storage(settings)
    with pytest.raises(InvalidJobSpec) as e:
        storage.resolve("key-1/evil", "key-1/out")
    assert "input_dir" in e.value.fields
    with pytest.raises(InvalidJobSpec) as e:
        storage.resolve("key-1/incoming", "key-1/evil/out")
    assert "output_dir" in e.value.fields


def test_symlink_inside_storebase_is_fine(settings: Settings, storebase: Path) -> None:
    os.symlink(storebase / "key-1" / "incoming", storebase / "alias")
    m = Storage(settings).resolve("alias", "key-1/out")
    # the engine gets the real path, so swapping the link later changes nothing
    assert m.input_host == (storebase / "key-1" / "incoming").resolve()


def test_missing_input_dir_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidJobSpec) as e:
        Storage(settings).resolve("key-1/nope", "key-1/out")
    assert e.value.fields == {"input_dir": "no such folder"}


def test_output_dir_is_created(settings: Settings, storebase: Path) -> None:
    m = Storage(settings).resolve("key-1/incoming", "key-1/new/out")
    Storage.prepare_output(m)
    assert (storebase / "key-1" / "new" / "out").is_dir()


def test_output_equal_to_input_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidJobSpec) as e:
        Storage(settings).resolve("key-1/incoming", "/key-1/incoming/")
    assert "output_dir" in e.value.fields


@pytest.mark.parametrize(
    ("field", "value"),
    [("input_dir", "../x"), ("output_dir", "a/../../x"), ("output_dir", "")],
)
def test_escape_via_api_is_400_and_creates_nothing(
    client: FlaskClient, fake: FakeBackend, storebase: Path, field: str, value: str
) -> None:
    before = sorted(p for p in storebase.parent.rglob("*"))
    resp = client.post("/api/v1/", json=job_body(**{field: value}))
    assert resp.status_code == 400
    assert field in resp.get_json()["fields"]
    assert fake.calls == []
    assert sorted(p for p in storebase.parent.rglob("*")) == before


def test_volume_storage_is_checked_lexically_only(tmp_path: Path) -> None:
    from pman.settings import load_settings

    s = load_settings({"CONTAINER_ENV": "docker", "STORAGE_TYPE": "docker_local_volume"})
    m = Storage(s).resolve("/k/in", "k/out")
    assert (m.input_dir, m.output_dir, m.input_host, m.output_host) == ("k/in", "k/out", None, None)
    with pytest.raises(InvalidJobSpec):
        Storage(s).resolve("k/../../in", "k/out")
