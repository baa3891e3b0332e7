"""Keeps the registry in step with the engine, so polls never wait for it.

One tracker leads per registry, however many gunicorn workers there are: each
worker runs a tracker thread, and only the holder of the registry's leader
lock works (a file lock next to a SQLite database, an advisory lock in
PostgreSQL). A cycle asks the engine once for every unfinished job
(``Backend.list_active``), then asks about each job whose state changed; a
finished job's logs are fetched once and kept. Reconciliation (at start, after
an engine outage, and every ``reconcile_every`` seconds) lists every job pman
ever created on the engine, adopts unknown ones and marks vanished ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text

from pman.backends.base import Backend
from pman.errors import BackendUnavailable, JobNotFound, PmanError
from pman.jobs import LABEL_AUID, LABEL_MANAGED
from pman.models import JobInfo, JobState
from pman.registry import Registry

log = logging.getLogger(__name__)

#: a record younger than this may have no engine job yet (its POST is in flight)
SUBMIT_GRACE_S = 30.0


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


@dataclass
class CycleReport:
    """What one tracker cycle did (for logs, tests and the benchmark)."""

    engine_calls: int = 0
    watched: int = 0
    updated: int = 0
    adopted: int = 0
    vanished: int = 0
    reconciled: bool = False


class Tracker:
    def __init__(
        self,
        registry: Registry,
        backend: Backend,
        *,
        logs_tail: int,
        interval: float = 0.5,
        idle_interval: float = 1.0,
        reconcile_every: float = 60.0,
        lock: LeaderLock | None = None,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.logs_tail = logs_tail
        self.interval = interval
        self.idle_interval = idle_interval
        self.reconcile_every = reconcile_every
        self.lock = lock or leader_lock_for(registry)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._needs_reconcile = True
        self._last_reconcile = 0.0
        self.last_report = CycleReport()

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pman-tracker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.lock.release()

    def request_reconcile(self) -> None:
        """Reconcile with the engine at the next cycle, and start it now."""
        self._needs_reconcile = True
        self._wake.set()

    def wake(self) -> None:
        """A job was submitted or deleted here: look now rather than after the idle wait."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                if self.lock.try_acquire():
                    report = self.run_once()
                    busy = report.watched > 0
            except BackendUnavailable as e:
                if not self._needs_reconcile:
                    log.warning("tracker: engine unavailable (%s); will reconcile when back", e)
                self._needs_reconcile = True
            except Exception:
                log.exception("tracker cycle failed")
            # Unfinished jobs: poll the engine at `interval`. Nothing to watch: only
            # look at the registry every idle interval (a submit made by another
            # process cannot wake us) or when a submit here wakes us.
            self._wake.wait(self.interval if busy else self.idle_interval)
            self._wake.clear()

    # ---------------------------------------------------------------- cycle
    def run_once(self) -> CycleReport:
        """One cycle; reconciles first when due. Raises BackendUnavailable."""
        report = CycleReport()
        started = time.monotonic()
        due = started - self._last_reconcile > self.reconcile_every
        if self._needs_reconcile or due:
            self._reconcile(report)
            self._needs_reconcile = False
            self._last_reconcile = time.monotonic()
        records = self.registry.unfinished()
        report.watched = len(records)
        if records:
            live = {info.name: info for info in self.backend.list_active()}
            report.engine_calls += 1
            for record in records:
                self._follow(record, live.get(record.jid), report)
        self.last_report = report
        log.debug(
            "tracker cycle: %d watched, %d updated, %d engine calls, %.3f s",
            report.watched,
            report.updated,
            report.engine_calls,
            time.monotonic() - started,
        )
        return report

    def _follow(self, record: Any, live: JobInfo | None, report: CycleReport) -> None:
        if live is not None and live.state is record.state:
            return
        young = (datetime.now(UTC) - record.submitted_at).total_seconds() < SUBMIT_GRACE_S
        if live is None and record.message == "submitting" and young:
            return  # its POST has not reached the engine yet
        try:
            info = self.backend.get(record.jid)
            report.engine_calls += 1
        except JobNotFound:
            if young:
                return
            never_started = record.message == "submitting"
            self.registry.record(
                record.id,
                JobInfo(
                    name=record.jid,
                    state=JobState.SYSTEM_ERROR,
                    reason="never_submitted" if never_started else "vanished",
                    message=(
                        "pman stopped before the job reached the engine"
                        if never_started
                        else "the job disappeared from the engine (removed outside pman?)"
                    ),
                ),
            )
            report.vanished += 1
            return
        logs = None
        if info.state.finished:
            logs = self._final_logs(record.jid)
            report.engine_calls += 1
        if self.registry.record(record.id, info, logs) or logs is not None:
            report.updated += 1

    def _final_logs(self, jid: str) -> str:
        try:
            return self.backend.logs(jid, self.logs_tail)
        except PmanError as e:
            if isinstance(e, BackendUnavailable):
                raise
            return ""

    def _reconcile(self, report: CycleReport) -> None:
        """Adopt pman-labelled jobs the registry does not know."""
        report.reconciled = True
        infos = self.backend.list()
        report.engine_calls += 1
        known = self.registry.active_jids()
        for info in infos:
            if info.name in known or info.labels.get(LABEL_MANAGED) != "true":
                continue
            try:
                full = self.backend.get(info.name)
                report.engine_calls += 1
            except JobNotFound:
                continue
            logs = None
            if full.state.finished:
                logs = self._final_logs(info.name)
                report.engine_calls += 1
            self.registry.adopt(
                full, self.backend.name, info.labels.get(LABEL_AUID, ""), info.labels, logs
            )
            log.warning("tracker: adopted %s, found on the engine without a record", info.name)
            report.adopted += 1
