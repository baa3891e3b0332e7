"""Keeps the registry in step with the engine, so polls never wait for it.

One tracker leads per registry, however many HTTP workers there are: each
worker runs a tracker thread, and only the holder of the registry's leader
lock works (a file lock next to a SQLite database, an advisory lock in
PostgreSQL). A cycle asks the engine once for every unfinished job
(``Backend.list_active``), then asks about each job whose state changed or
that the engine's events say ended; a finished job's logs are fetched once
and kept. Cycles run when the engine's event stream (``Backend.watch``)
reports a change, with a slow poll as a safety net; on engines without
events, every ``interval`` seconds. Reconciliation (at start, after
an engine outage, and every ``reconcile_every`` seconds) lists every job pman
ever created on the engine, adopts unknown ones and marks vanished ones.

The leader also keeps the logs of running jobs in the registry, refreshed in
a thread of their own at most every ``logs_every`` seconds per job and at most
``LOGS_CALLS_PER_S`` engine calls a second in all, so a poll never asks the
engine for anything and the engine's load does not follow the poll rate or
the number of HTTP workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text

from pman import metrics
from pman.backends.base import Backend, ChangeStream
from pman.errors import BackendUnavailable, JobExists, JobNotFound, PmanError
from pman.jobs import spec_from_record
from pman.labels import LABEL_AUID, LABEL_INSTANCE, LABEL_MANAGED
from pman.lifecycle import Missing, Phase, StartFailed
from pman.models import JobInfo, JobState
from pman.registry import JobRecord, Registry
from pman.settings import Settings
from pman.storage import Storage
from pman.telemetry import job_context
from pman.webhooks import Deliverer

log = logging.getLogger(__name__)

#: a record younger than this may have no engine job yet (its POST is in flight)
SUBMIT_GRACE_S = 30.0
#: the most logs calls a second the tracker makes for running jobs
LOGS_CALLS_PER_S = 20.0
#: while the engine's event stream is open, the tracker still looks this often
WATCHED_POLL_S = 5.0
#: how often a withdrawn submission's job is deleted from the engine again;
#: its record goes after WITHDRAW_DELETES deletes the engine answered, so that
#: a call the engine carries out late (after the first delete) is caught too
WITHDRAW_EVERY_S = 2.0
WITHDRAW_DELETES = 2


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
    #: jobs started from pman's queue
    started: int = 0
    #: withdrawn submissions removed from the engine and forgotten
    withdrawn: int = 0


class Tracker:
    def __init__(
        self,
        registry: Registry,
        backend: Backend,
        *,
        logs_tail: int,
        interval: float = 0.5,
        logs_every: float = 2.0,
        idle_interval: float = 1.0,
        reconcile_every: float = 60.0,
        lock: LeaderLock | None = None,
        instance: str = "",
        max_running: int = 0,
        storage: Storage | None = None,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.logs_tail = logs_tail
        self.interval = interval
        self.logs_every = logs_every
        self.idle_interval = idle_interval
        self.reconcile_every = reconcile_every
        self.lock = lock or leader_lock_for(registry)
        #: this pman's PMAN_INSTANCE: jobs another pman made are not adopted
        self.instance = instance
        #: PMAN_MAX_RUNNING: the tracker starts jobs waiting in pman's queue
        self.max_running = max_running
        #: to place queued jobs' folders when they start
        self.storage = storage
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: withdrawn submissions: the engine's answered deletes so far, by record id
        self._withdraw_deletes: dict[int, int] = {}
        self._last_withdraw = 0.0
        self._thread: threading.Thread | None = None
        self._logs_thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self._stream: ChangeStream | None = None
        #: the engine's event stream is open: changes wake the cycle
        self.watching = False
        #: names of jobs the engine's events were about, since the last cycle
        self._changed: set[str] = set()
        self._changed_lock = threading.Lock()
        self._leading = False
        #: running jobs (record id -> jid) as of the last cycle
        self._running: dict[int, str] = {}
        #: record id -> (when its logs were last fetched, hash of what they were)
        self._logs_seen: dict[int, tuple[float, int | None]] = {}
        self._needs_reconcile = True
        self._last_reconcile = 0.0
        self.last_report = CycleReport()
        #: sends the registry's webhook outbox while this tracker leads (None: no webhooks)
        self.deliverer: Deliverer | None = None

    @classmethod
    def from_settings(cls, registry: Registry, backend: Backend, settings: Settings) -> Tracker:
        tracker = cls(
            registry,
            backend,
            logs_tail=settings.resource.jobs.logs_tail,
            interval=settings.core.tracker_interval,
            logs_every=settings.core.logs_refresh_seconds,
            instance=settings.registry.instance,
            max_running=settings.resource.jobs.max_running,
            storage=Storage(settings),
        )
        # one sender per registry: the leader's
        tracker.deliverer = Deliverer.from_settings(
            registry, settings, leading=lambda: tracker._leading
        )
        return tracker

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        """Start following the engine (again, after ``stop``: reconciling first)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._needs_reconcile = True
        self._thread = threading.Thread(target=self._run, name="pman-tracker", daemon=True)
        self._thread.start()
        self._logs_thread = threading.Thread(
            target=self._run_logs, name="pman-tracker-logs", daemon=True
        )
        self._logs_thread.start()
        self._watch_thread = threading.Thread(
            target=self._run_watch, name="pman-tracker-events", daemon=True
        )
        self._watch_thread.start()
        if self.deliverer is not None:
            self.deliverer.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        for thread in (self._thread, self._logs_thread, self._watch_thread):
            if thread is not None:
                thread.join(timeout=10)
        self._thread = self._logs_thread = self._watch_thread = None
        if self.deliverer is not None:
            self.deliverer.stop()
        self._leading = False
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
                self._leading = self.lock.try_acquire()
                if self._leading:
                    report = self.run_once()
                    busy = report.watched > 0
                    if report.updated and self.deliverer is not None:
                        self.deliverer.wake()  # new transitions: their deliveries are due
            except BackendUnavailable as e:
                if not self._needs_reconcile:
                    log.warning("tracker: engine unavailable (%s); will reconcile when back", e)
                self._needs_reconcile = True
            except Exception:
                log.exception("tracker cycle failed")
            # With the engine's events, a change wakes us; poll only as a safety
            # net. Without: unfinished jobs are polled every `interval`; with none,
            # look at the registry every idle interval (a submit made by another
            # process cannot wake us) or when a submit here wakes us.
            if self.watching:
                pause = WATCHED_POLL_S
            else:
                pause = self.interval if busy else self.idle_interval
            self._wake.wait(pause)
            self._wake.clear()

    def _run_watch(self) -> None:
        """Follow the engine's event stream while leading; each event wakes the cycle."""
        while not self._stop.is_set():
            if not self._leading:
                self._stop.wait(0.5)
                continue
            try:
                stream = self.backend.watch()
            except BackendUnavailable:
                self._stop.wait(1.0)
                continue
            if stream is None:
                return  # the engine has no events: the cycle polls
            self._stream = stream
            self.watching = True
            self._wake.set()  # whatever changed before the stream opened
            if self._stop.is_set():
                stream.close()  # stop() ran before the stream was known to it
            try:
                for name in stream:
                    log.debug("tracker: engine event about %r", name)
                    if name:
                        with self._changed_lock:
                            self._changed.add(name)
                    self._wake.set()
                    if self._stop.is_set() or not self._leading:
                        break
            except Exception:
                log.exception("tracker: the engine's event stream failed")
            finally:
                self.watching = False
                self._stream = None
                stream.close()
            if not self._stop.is_set():
                log.info("tracker: the engine's event stream ended; polling until it is back")
            self._stop.wait(1.0)

    # ---------------------------------------------------------------- cycle
    def run_once(self) -> CycleReport:
        """One cycle; reconciles first when due. Raises BackendUnavailable."""
        try:
            report = self._cycle()
        except BackendUnavailable:
            metrics.tracker_cycle("unavailable")
            raise
        except Exception:
            metrics.tracker_cycle("failed")
            raise
        metrics.tracker_cycle("ok")
        return report

    def _cycle(self) -> CycleReport:
        report = CycleReport()
        started = time.monotonic()
        due = started - self._last_reconcile > self.reconcile_every
        if self._needs_reconcile or due:
            self._reconcile(report)
            self._needs_reconcile = False
            self._last_reconcile = time.monotonic()
        with self._changed_lock:
            told, self._changed = self._changed, set()
        records = self.registry.unfinished()
        report.watched = len(records)
        running: dict[int, str] = {}
        if records:
            live = {info.name: info for info in self.backend.list_active()}
            report.engine_calls += 1
            for record in records:
                if record.phase in (Phase.QUEUED, Phase.WITHDRAWN):
                    continue  # not on the engine yet; or no job any more
                info = live.get(record.jid)
                with job_context(record.jid):
                    self._follow(record, info, report, told=record.jid in told)
                if info is not None and info.state is JobState.RUNNING:
                    running[record.id] = record.jid
        self._running = running
        withdrawn = [r for r in records if r.phase is Phase.WITHDRAWN]
        if withdrawn and time.monotonic() - self._last_withdraw >= WITHDRAW_EVERY_S:
            self._withdraw(withdrawn, report)
        if any(r.phase is Phase.QUEUED for r in records):
            self._start_queued(report)
        self.last_report = report
        log.debug(
            "tracker cycle: %d watched, %d updated, %d engine calls, %.3f s",
            report.watched,
            report.updated,
            report.engine_calls,
            time.monotonic() - started,
        )
        return report

    def _withdraw(self, records: list[JobRecord], report: CycleReport) -> None:
        """Remove from the engine what it made of submissions answered 503, then
        forget them (raises BackendUnavailable while the engine does not answer)."""
        self._last_withdraw = time.monotonic()
        for record in records:
            with contextlib.suppress(JobNotFound):
                self.backend.delete(record.jid)
            report.engine_calls += 1
            done = self._withdraw_deletes.get(record.id, 0) + 1
            if done < WITHDRAW_DELETES:
                self._withdraw_deletes[record.id] = done
                continue
            self._withdraw_deletes.pop(record.id, None)
            self._remove_empty_output(record)
            self.registry.forget(record.id)
            report.withdrawn += 1
            log.info("tracker: withdrew %s (%s)", record.jid, record.message)

    def _remove_empty_output(self, record: JobRecord) -> None:
        """An engine that created a withdrawn job late may have made its output
        folder (Docker makes a missing bind source): remove it if empty."""
        if self.storage is None:
            return
        try:
            data, _, _ = self.registry.queued_spec(record.id)
            output = self.storage.resolve(
                data["mounts"]["input_dir"], data["mounts"]["output_dir"]
            ).output_host
        except (PmanError, KeyError, TypeError):
            return
        if output is not None:
            with contextlib.suppress(OSError):
                output.rmdir()  # only if empty: never a folder with data in it

    def _follow(
        self, record: JobRecord, live: JobInfo | None, report: CycleReport, told: bool = False
    ) -> None:
        # an engine event about the job (``told``) means ask it: its list may
        # not show the change yet (Docker updates the list after the event)
        if live is not None and live.state is record.state and not told:
            return
        young = (datetime.now(UTC) - record.submitted_at).total_seconds() < SUBMIT_GRACE_S
        if live is None and record.phase is Phase.ACCEPTED and young:
            return  # its POST has not reached the engine yet
        try:
            info = self.backend.get(record.jid)
            report.engine_calls += 1
        except JobNotFound:
            if young:
                return
            # never submitted (pman stopped first), or vanished: the lifecycle says which
            self.registry.report(record.id, Missing())
            report.vanished += 1
            return
        logs = None
        if info.state.finished:
            logs = self._final_logs(record.jid)
            report.engine_calls += 1
        changed = self.registry.record(record.id, info, logs)
        if changed and info.state.finished and info.finished_at is not None:
            ended = info.finished_at
            if ended.tzinfo is None:
                ended = ended.replace(tzinfo=UTC)
            metrics.visibility_lag((datetime.now(UTC) - ended).total_seconds())
        if changed or logs is not None:
            report.updated += 1

    # ---------------------------------------------------------------- queue
    def _start_queued(self, report: CycleReport) -> None:
        """Start waiting jobs, oldest first, while fewer than ``max_running`` are
        on the engine (counted in the registry: after this cycle's updates).
        Without a limit (PMAN_MAX_RUNNING lowered to 0 over a restart) every
        waiting job starts."""
        limit = self.max_running if self.max_running > 0 else sys.maxsize
        while not self._stop.is_set():
            record = self.registry.claim_next(self.backend.name, limit)
            if record is None:
                break
            self._submit_claimed(record)  # raises BackendUnavailable, job back in its place
            report.started += 1
            report.engine_calls += 1
        if self.max_running > 0:
            self.registry.refresh_queue_messages(self.backend.name, self.max_running)

    def _submit_claimed(self, record: JobRecord) -> None:
        """Submit a job taken from the queue. An engine that cannot be reached
        puts it back in its place; any other failure ends the job with the
        engine's message (never dropped, never retried for ever)."""
        jid = record.jid

        def fail(message: str) -> None:
            log.warning("tracker: could not start queued job %s: %s", jid, message)
            self.registry.report(record.id, StartFailed(message=message))

        try:
            data, labels, fingerprint = self.registry.queued_spec(record.id)
            if self.storage is None:
                raise PmanError("this tracker was built without the storage to place it")
            spec = spec_from_record(data, labels, fingerprint, self.storage)
            self.storage.prepare_output(spec.mounts)
            info = self.backend.submit(spec)
        except BackendUnavailable as e:
            self.registry.unclaim(record.id, f"waiting for the engine ({e.message})")
            raise
        except JobExists as e:
            if e.existing is not None and e.existing.fingerprint == record.fingerprint:
                self.registry.record(record.id, e.existing)  # it got there before
            else:
                fail(f"the engine has a job named {jid!r} that pman did not record")
            return
        except PmanError as e:
            fail(e.message)
            return
        except Exception as e:
            log.exception("tracker: starting queued job %s", jid)
            fail(f"internal error in pman ({type(e).__name__}); the server log has the details")
            return
        self.registry.record(record.id, info)
        if not self.registry.get(record.id).active:
            # deleted while it was being submitted: it must not run unrecorded
            self.backend.delete(jid)
        log.info("tracker: started queued job %s", jid)

    # ---------------------------------------------------------------- logs
    def _run_logs(self) -> None:
        while not self._stop.is_set():
            if self._leading:
                try:
                    self.refresh_logs()
                except BackendUnavailable:
                    pass  # the state cycle reports the outage
                except Exception:
                    log.exception("tracker: refreshing running jobs' logs failed")
            self._stop.wait(0.25)

    def refresh_logs(self) -> int:
        """Fetch the logs of running jobs whose copy is older than ``logs_every``,
        oldest first, pacing engine calls to ``LOGS_CALLS_PER_S``; store those
        that changed. Returns the number of engine calls made."""
        running = dict(self._running)
        for job_id in set(self._logs_seen) - set(running):
            del self._logs_seen[job_id]
        now = time.monotonic()
        never = (0.0, None)
        due = sorted(
            (self._logs_seen.get(job_id, never)[0], job_id)
            for job_id in running
            if now - self._logs_seen.get(job_id, never)[0] >= self.logs_every
        )
        calls = 0
        for _, job_id in due:
            if self._stop.is_set():
                break
            started = time.monotonic()
            try:
                logs = self.backend.logs(running[job_id], self.logs_tail)
            except BackendUnavailable:
                raise
            except PmanError:
                logs = None  # gone meanwhile: the state cycle will say so
            calls += 1
            digest = None if logs is None else hash(logs)
            if digest is not None and digest != self._logs_seen.get(job_id, never)[1]:
                self.registry.set_running_logs(job_id, logs)  # type: ignore[arg-type]
            self._logs_seen[job_id] = (time.monotonic(), digest)
            self._stop.wait(max(0.0, 1.0 / LOGS_CALLS_PER_S - (time.monotonic() - started)))
        return calls

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
            if info.labels.get(LABEL_INSTANCE, "") not in ("", self.instance):
                continue  # another pman's job on a shared engine: its own tracker follows it
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
