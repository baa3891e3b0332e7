"""STORAGE_TYPE=docker_local_volume: job data in an engine-managed local volume,
found by VOLUME_NAME or through the pfcon container's mount (PFCON_SELECTOR)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker.errors
import pytest
import requests

from tests.integration.conftest import TEST_IMAGE, Pman, engine_client


@pytest.fixture
def volume(backend: str) -> Iterator[tuple[str, Path]]:
    api = engine_client(backend)
    name = f"pman-test-vol-{uuid.uuid4().hex[:8]}"
    api.create_volume(name, driver="local")
    mountpoint = Path(api.inspect_volume(name)["Mountpoint"])
    (mountpoint / "key-1" / "incoming").mkdir(parents=True)
    (mountpoint / "key-1" / "incoming" / "data.txt").write_text("in a volume\n")
    yield name, mountpoint
    with contextlib.suppress(docker.errors.APIError):
        api.remove_volume(name, force=True)


def _run_copy_job(p: Pman, mountpoint: Path) -> None:
    p.storebase = mountpoint
    body = p.body(output_dir=f"key-1/out-{uuid.uuid4().hex[:6]}")
    resp = p.post(body)
    assert resp.status_code == 201, resp.text
    done = p.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert (mountpoint / body["output_dir"] / "out-data.txt").read_text() == "in a volume\n"
    mounts = {m["Destination"]: m for m in p.container(body["jid"])["Mounts"]}  # type: ignore[index]
    assert mounts["/share/incoming"]["Source"] == str(mountpoint / "key-1" / "incoming")
    assert mounts["/share/incoming"]["RW"] is False


def test_volume_by_name(
    make_pman: Callable[..., Pman], backend: str, volume: tuple[str, Path]
) -> None:
    name, mountpoint = volume
    p = make_pman(backend, STORAGE_TYPE="docker_local_volume", VOLUME_NAME=name)
    _run_copy_job(p, mountpoint)


def test_volume_found_through_pfcon(
    make_pman: Callable[..., Pman], backend: str, volume: tuple[str, Path]
) -> None:
    name, mountpoint = volume
    api = engine_client(backend)
    label = f"org.chrisproject.role=pfcon-{uuid.uuid4().hex[:6]}"
    key, value = label.split("=")
    pfcon = api.create_container(
        TEST_IMAGE,
        command=["sleep", "120"],
        labels={key: value},
        host_config=api.create_host_config(binds=[f"{name}:/var/local/storeBase"]),
    )
    try:
        api.start(pfcon)
        p = make_pman(backend, STORAGE_TYPE="docker_local_volume", PFCON_SELECTOR=label)
        _run_copy_job(p, mountpoint)
    finally:
        api.remove_container(pfcon, force=True)


def test_missing_volume_is_a_clear_engine_error(
    make_pman: Callable[..., Pman], backend: str
) -> None:
    p = make_pman(backend, STORAGE_TYPE="docker_local_volume", VOLUME_NAME="pman-no-such-volume")
    resp = p.post(p.body())
    assert resp.status_code == 502
    assert "pman-no-such-volume" in resp.json()["message"]
    health = requests.get(f"{p.url}/health", timeout=10)
    assert health.status_code == 503
    assert "pman-no-such-volume" in health.json()["message"]
