from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pman.app import create_app
from pman.settings import Settings, load_settings
from pman.tracker import CycleReport
from tests.unit.fakes import FakeBackend


@pytest.fixture
def storebase(tmp_path: Path) -> Path:
    base = tmp_path / "storebase"
    (base / "key-1" / "incoming").mkdir(parents=True)
    (base / "key-1" / "incoming" / "data.txt").write_text("data\n")
    return base


def make_settings(storebase: Path, tmp_path: Path, **env: str) -> Settings:
    # the tests drive the tracker themselves (track fixture): no background thread
    environ = {
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
        "PMAN_TRACKER": "off",
        # authentication has its own tests (test_auth.py)
        "PMAN_AUTH": "none",
        **env,
    }
    return load_settings(environ)


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def settings(storebase: Path, tmp_path: Path) -> Settings:
    return make_settings(storebase, tmp_path)


@pytest.fixture
def app(settings: Settings, fake: FakeBackend) -> Flask:
    return create_app(settings=settings, backend=fake)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as c:
        yield c


@pytest.fixture
def track(app: Flask) -> Callable[[], CycleReport]:
    """Run one tracker cycle, as the background tracker would."""
    return app.extensions["pman"].service.tracker.run_once
