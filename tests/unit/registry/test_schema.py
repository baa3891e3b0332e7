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


def test_head_is_the_migrations_head() -> None:
    """migrate.HEAD (read at every start-up without loading Alembic) is the newest
    revision, and the revisions make one line from the baseline."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pman.registry import migrate

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_heads() == [migrate.HEAD]
    assert scripts.get_bases() == [migrate.BASELINE]
    line = [s.revision for s in scripts.walk_revisions()]
    assert line[0] == migrate.HEAD and line[-1] == migrate.BASELINE


def test_a_new_registry_is_at_head_and_a_second_start_does_nothing(tmp_path: Path) -> None:
    from pman.registry import migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'pman.db'}")
    first = migrate.upgrade(engine)
    assert first is not None and (first.before, first.legacy) == (None, False)
    assert migrate.upgrade(engine) is None
    engine.dispose()
