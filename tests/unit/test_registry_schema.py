"""Workers starting together race to create the registry's schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from pman.registry import Registry, make_engine


def test_a_lost_schema_race_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(make_engine(f"sqlite:///{tmp_path / 'pman.db'}"))
    real = registry._create_schema
    failures = iter([OperationalError("PRAGMA journal_mode=WAL", {}, Exception("locked"))] * 2)

    def flaky() -> None:
        for error in failures:
            raise error
        real()

    monkeypatch.setattr(registry, "_create_schema", flaky)
    registry.create_schema()  # two lost races, then it is made
    assert registry.find_active("nobody") is None
    registry.close()


def test_a_schema_that_cannot_be_made_is_an_error(tmp_path: Path) -> None:
    registry = Registry(make_engine("sqlite:////nonexistent-dir/pman.db"))
    with pytest.raises(OperationalError):
        registry.create_schema(attempts=2)
