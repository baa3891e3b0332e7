"""The registry's schema, brought up to date at start-up, once.

Every pman process (each HTTP worker, the tracker, each replica) calls
``upgrade`` as it starts. A database already at ``HEAD`` costs one look at
the version table. Otherwise the process takes the registry's migration lock
(PostgreSQL: a transaction-level advisory lock; SQLite: an flock on a file
next to the database), looks again, and, still behind, does in one
transaction what the database needs:

- empty: every migration (``migrations/versions``), from the baseline on;
- pman's tables without a version table: a registry made by pman 4.0.0 or
  earlier; what an earlier release's lacks of 4.0.0's schema is added (as
  releases before 4.0.0 did at start-up), it is stamped as the baseline, and
  the migrations since are applied;
- a version behind ``HEAD``: the migrations since that version.

The others wait for the lock, then find the database at ``HEAD``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from pman.registry.schema import make_engine

log = logging.getLogger(__name__)

#: pman's own Alembic version table: a database pman shares with an
#: application of its own migrations keeps the two apart
VERSION_TABLE = "pman_alembic_version"
#: the revision of pman 4.0.0's schema
BASELINE = "0001"
#: the newest revision (a test checks it is the migrations' head)
HEAD = "0003"
MIGRATIONS = Path(__file__).with_name("migrations")
#: PostgreSQL advisory lock key of the migration ("pmanmig"); the tracker's
#: leader lock is another
LOCK_KEY = 0x706D616E6D6967


@dataclass(frozen=True)
class Upgraded:
    """What one ``upgrade`` did."""

    #: the revision the database was at (None: empty, or a registry of 4.0.0 or earlier)
    before: str | None
    #: it was a registry of 4.0.0 or earlier, stamped as the baseline
    legacy: bool
    after: str = HEAD


def upgrade(engine: Engine) -> Upgraded | None:
    """Bring the registry's schema to ``HEAD``; None if it was there already."""
    if engine.dialect.name == "sqlite":
        # the look, too, under the lock: a process that opens a new database
        # file turns on its write-ahead log, which another one opening it at
        # that moment may find locked
        with _file_lock(engine.url.database):
            if _at_head(engine):
                return None
            migrating = _transactional_sqlite(engine)
            try:
                with migrating.begin() as conn:
                    return _upgrade_in(conn)
            finally:
                migrating.dispose()
    if _at_head(engine):
        return None
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        return _upgrade_in(conn)


def _at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        return _version(conn) == HEAD


def _version(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _upgrade_in(conn: Connection) -> Upgraded | None:
    """Under the lock, in the caller's transaction."""
    from alembic import command

    before = _version(conn)
    if before == HEAD:
        return None  # another process did it while this one waited for the lock
    config = _config(conn)
    legacy = before is None and inspect(conn).has_table("jobs")
    if legacy:
        _complete_legacy(conn)
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")
    done = Upgraded(before=before, legacy=legacy)
    log.info(
        "registry: schema upgraded from %s to %s",
        "pman 4.0.0 or earlier" if legacy else (before or "an empty database"),
        done.after,
    )
    return done


def _config(conn: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _complete_legacy(conn: Connection) -> None:
    """Add to a registry made by 4.0.0 or earlier what it lacks of 4.0.0's schema:
    missing tables, (nullable) columns and indexes, and the queue's gate row."""
    from pman.registry.migrations import baseline_4_0_0 as baseline
    from pman.registry.queue import make_gate

    baseline.metadata.create_all(conn)  # tables an earlier release did not have
    inspector = inspect(conn)
    for table in baseline.metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name}")
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
            log.info("registry: added column %s.%s", table.name, column.name)
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    make_gate(conn)


@contextlib.contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    """An flock next to a SQLite database file: one process migrates at a time.
    (A database in memory, or in a folder that does not exist, needs none: the
    first is one process's, the second fails to open anyway.)"""
    if not database or database == ":memory:" or not Path(database).parent.is_dir():
        yield
        return
    with open(database + ".migrate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _transactional_sqlite(engine: Engine) -> Engine:
    """An engine on the same SQLite database whose transactions include DDL.

    pysqlite starts a transaction only before a DML statement, so by default
    CREATE and ALTER commit one by one; here the driver is left in autocommit
    and SQLAlchemy's BEGIN is sent as BEGIN IMMEDIATE, so a migration applies
    whole or not at all (SQLAlchemy's recipe for SQLite transactions)."""
    url = engine.url.render_as_string(hide_password=False)
    migrating = make_engine(url, poolclass=NullPool)

    @event.listens_for(migrating, "connect")
    def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(migrating, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return migrating
