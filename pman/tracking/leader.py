"""The tracker's leader lock: one tracker of a registry works at a time, however
many pman processes there are (a file lock next to a SQLite database, an
advisory lock in PostgreSQL)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text

from pman.registry import Registry

log = logging.getLogger("pman.tracker")


class LeaderLock:
    """Held by at most one tracker of a registry at a time."""

    def try_acquire(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class FileLock(LeaderLock):
    """flock on a file: released by the kernel when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def try_acquire(self) -> bool:
        if self._fh is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - kept open while held
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class PostgresAdvisoryLock(LeaderLock):
    """pg_try_advisory_lock on a connection of its own: released if it drops."""

    KEY = 0x706D616E  # "pman"

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._conn: Any = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("lost the tracker's database connection: giving up leadership")
                self.release()
        conn = self.registry.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.KEY}).scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            # a session lock outlives close() on a pooled connection: unlock,
            # and drop the connection from the pool for good measure
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
                self._conn.commit()
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None


def leader_lock_for(registry: Registry) -> LeaderLock:
    url = registry.engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresAdvisoryLock(registry)
    database = url.database
    if database and database != ":memory:":
        return FileLock(Path(database + ".tracker.lock"))
    return FileLock(Path(f"/tmp/pman-tracker-{os.getpid()}-{id(registry)}.lock"))
