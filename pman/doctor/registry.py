"""``pman doctor``'s global checks: the registry reachable and at this pman's
schema (read only: the doctor never creates nor migrates it), and this
machine's clock against the database server's."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pman.backends.kit.doctor import Check, Finding, ok, problem, skipped, writable_folder
from pman.registry.migrate import HEAD, VERSION_TABLE
from pman.registry.schema import make_engine
from pman.settings.registry import RegistrySettings

#: seconds this machine's clock may differ from the database server's
CLOCK_SKEW_LIMIT = 2.0
MIGRATE_FIX = (
    "start this pman once (`pman serve`, or `pman track` alone): it migrates the registry at "
    "start-up, in one transaction under a lock (back the database up first)"
)


def checks(registry: RegistrySettings | None, timeout: float = 10.0) -> list[Check]:
    if registry is None:
        why = "PMAN_DATABASE_URL or PMAN_DATA_DIR is invalid (see the configuration rows)"
        return [
            Check("registry", lambda: [skipped("registry", why)]),
            Check("clock", lambda: [skipped("clock", why)]),
        ]
    url = registry.database_url
    return [
        Check(
            "registry",
            lambda: [registry_state(url, timeout)],
            hang_fix="check that the database server runs and is reachable from this machine",
        ),
        # the clock needs the server to answer, not the schema to be current
        Check("clock", lambda: [clock(url, timeout)]),
    ]


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def registry_state(url: str, timeout: float = 10.0) -> Finding:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_state(parsed.database, timeout)
    engine = make_engine(url, poolclass=NullPool, connect_args={"connect_timeout": int(timeout)})
    try:
        with engine.connect() as conn:
            version, tables = _version(conn)
            server = conn.execute(text("SHOW server_version")).scalar()
    except Exception as e:
        return problem(
            "registry",
            f"cannot reach the registry at {_shown(url)}: {_first_line(e)}",
            "check PMAN_DATABASE_URL (host, port, user, password, database) and that the "
            "database server runs and accepts this machine",
        )
    finally:
        engine.dispose()
    return _verdict(f"PostgreSQL {server} at {_shown(url)}", version, tables)


def _sqlite_state(database: str | None, timeout: float) -> Finding:
    if not database or database == ":memory:":
        return ok("registry", "SQLite in memory (nothing kept across restarts)")
    path = Path(database)
    if not path.exists():
        folder = writable_folder("registry", path.parent, "PMAN_DATABASE_URL", made_by_pman=True)
        if folder.fix:
            return problem("registry", f"{path} does not exist, and {folder.detail}", folder.fix)
        return ok("registry", f"SQLite {path} does not exist yet: pman makes it at start-up")
    # read only, never created, never migrated
    uri = f"file:{path}?mode=ro"
    try:
        engine = create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=timeout),
            poolclass=NullPool,
        )
        with engine.connect() as conn:
            version, tables = _version(conn)
        engine.dispose()
    except Exception as e:
        return problem(
            "registry",
            f"cannot read the SQLite registry {path}: {_first_line(e)}",
            "check that PMAN_DATABASE_URL names pman's registry and the file is readable",
        )
    # SQLite writes the file and its -wal and -shm files beside it
    folder = writable_folder("registry", path.parent, "the registry's folder")
    if folder.fix or not os.access(path, os.W_OK):
        return problem(
            "registry",
            f"SQLite {path} is not writable" + (f" ({folder.detail})" if folder.fix else ""),
            f"make {path} and its folder writable by the user pman runs as",
        )
    return _verdict(f"SQLite {path}", version, tables)


def _version(conn: Connection) -> tuple[str | None, set[str]]:
    """The registry's Alembic revision (None: none recorded) and its tables."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE not in tables:
        return None, tables
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar(), tables


def _verdict(what: str, version: str | None, tables: set[str]) -> Finding:
    if version == HEAD:
        return ok("registry", f"{what}: schema at revision {HEAD}, this pman's")
    if version is None and "jobs" not in tables:
        return ok("registry", f"{what}: empty, pman makes its tables at start-up")
    if version is None:
        return problem(
            "registry",
            f"{what}: a registry of pman 4.0.0 or earlier, not migrated (this pman's schema "
            f"is revision {HEAD})",
            MIGRATE_FIX,
        )
    if version < HEAD:
        return problem(
            "registry",
            f"{what}: schema at revision {version}, behind this pman's {HEAD}",
            MIGRATE_FIX,
        )
    return problem(
        "registry",
        f"{what}: schema at revision {version}, which this pman (up to {HEAD}) does not know: "
        "a newer pman migrated it",
        "run the pman release that migrated it (or a newer one); an older pman must not "
        "serve a newer schema",
    )


def clock(url: str, timeout: float = 10.0) -> Finding:
    if make_url(url).get_backend_name() == "sqlite":
        return skipped(
            "clock", "SQLite: the registry is a file on this machine, no other clock to compare"
        )
    engine = make_engine(url, poolclass=NullPool, connect_args={"connect_timeout": int(timeout)})
    try:
        conn = engine.connect()
    except Exception:
        engine.dispose()
        return skipped("clock", "not checked: the registry's server does not answer")
    try:
        with conn:
            conn.execute(text("SELECT 1"))  # connected: the round trip below is one query
            before = time.time()
            server = float(
                conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
            )
            after = time.time()
    finally:
        engine.dispose()
    return skew_finding(server, before, after)


def skew_finding(
    server: float, before: float, after: float, limit: float = CLOCK_SKEW_LIMIT
) -> Finding:
    """The clock finding for a server time read between ``before`` and ``after``
    (this machine's): the skew is counted from the middle, less half the round trip."""
    skew = server - (before + after) / 2
    margin = (after - before) / 2
    shown = f"{abs(skew):.3f} s {'ahead of' if skew < 0 else 'behind'} the database server's"
    if abs(skew) - margin > limit:
        return problem(
            "clock",
            f"this machine's clock is {shown} (more than {limit:g} s): the times pman "
            "records and compares (its deadlines, its jobs' times) would disagree",
            "synchronise both machines' clocks with NTP (chrony: `chronyc tracking`; "
            "systemd-timesyncd: `timedatectl timesync-status`)",
        )
    return ok("clock", f"this machine's clock is {shown} (within {limit:g} s)")


def _first_line(e: Any) -> str:
    return (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
