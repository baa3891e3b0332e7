"""Keeps the registry in step with the engine, so polls never wait for it.

One tracker leads per registry, however many HTTP workers there are: each
worker runs a tracker thread, and only the holder of the registry's leader
lock works (a file lock next to a SQLite database, an advisory lock in
PostgreSQL). It follows every compute resource (a lane each,
pman.tracking.lanes): a cycle asks each resource's engine once for its
unfinished jobs (``Backend.list_active``), then asks about each job whose
state changed or that the engine's events say ended; a finished job's logs
are fetched once and kept; an engine that cannot be reached is left until it
answers again, the other resources carry on. Cycles run when an engine's
event stream (``Backend.watch``) reports a change, with a slow poll as a
safety net; on engines without
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

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pman import metrics
from pman.backends.base import Backend
from pman.errors import BackendUnavailable, JobNotFound
from pman.lifecycle import Missing, Phase
from pman.models import JobInfo, JobState
from pman.registry import DEFAULT_RESOURCE, JobRecord, Registry
from pman.settings import Settings
from pman.storage import Storage
from pman.telemetry import job_context
from pman.tracking.adoption import Adopter
from pman.tracking.lanes import CycleReport, Lane
from pman.tracking.leader import FileLock, LeaderLock, PostgresAdvisoryLock, leader_lock_for
from pman.tracking.logs import LOGS_CALLS_PER_S, LogsRefresher
from pman.tracking.queue import QueueStarter
from pman.tracking.withdrawal import WITHDRAW_DELETES, WITHDRAW_EVERY_S, Withdrawer
from pman.webhooks import Deliverer

if TYPE_CHECKING:
    from pman.resources import ResourceRuntime

__all__ = [
    "LOGS_CALLS_PER_S",
    "WITHDRAW_DELETES",
    "WITHDRAW_EVERY_S",
    "CycleReport",
    "FileLock",
    "Lane",
    "LeaderLock",
    "PostgresAdvisoryLock",
    "Tracker",
    "leader_lock_for",
]

log = logging.getLogger(__name__)

#: a record younger than this may have no engine job yet (its POST is in flight)
SUBMIT_GRACE_S = 30.0
#: while the engine's event stream is open, the tracker still looks this often
WATCHED_POLL_S = 5.0


class Tracker(QueueStarter, LogsRefresher, Adopter, Withdrawer):
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
        resource: str = DEFAULT_RESOURCE,
    ) -> None:
        self.registry = registry
        #: the resources followed, in PMAN_RESOURCES order (add_resource)
        self.lanes = [Lane(resource, backend, logs_tail, max_running, storage)]
        self.logs_tail = logs_tail
        self.interval = interval
        self.logs_every = logs_every
        self.idle_interval = idle_interval
        self.reconcile_every = reconcile_every
        self.lock = lock or leader_lock_for(registry)
        #: this pman's PMAN_INSTANCE: jobs another pman made are not adopted
        self.instance = instance
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: withdrawn submissions: the engine's answered deletes so far, by record id
        self._withdraw_deletes: dict[int, int] = {}
        self._last_withdraw = 0.0
        self._thread: threading.Thread | None = None
        self._logs_thread: threading.Thread | None = None
        #: names of jobs the engine's events were about, since the last cycle
        self._changed: set[str] = set()
        self._changed_lock = threading.Lock()
        self._leading = False
        #: running jobs (record id -> (its lane, jid)) as of the last cycle
        self._running: dict[int, tuple[Lane, str]] = {}
        #: record id -> (when its logs were last fetched, hash of what they were)
        self._logs_seen: dict[int, tuple[float, int | None]] = {}
        self._needs_reconcile = True
        self._last_reconcile = 0.0
        self.last_report = CycleReport()
        #: sends the registry's webhook outbox while this tracker leads (None: no webhooks)
        self.deliverer: Deliverer | None = None

    @classmethod
    def from_settings(cls, registry: Registry, backend: Backend, settings: Settings) -> Tracker:
        """The tracker of a pman whose one resource is ``settings.resource``."""
        tracker = cls(
            registry,
            backend,
            logs_tail=settings.resource.jobs.logs_tail,
            interval=settings.core.tracker_interval,
            logs_every=settings.core.logs_refresh_seconds,
            instance=settings.registry.instance,
            max_running=settings.resource.jobs.max_running,
            storage=Storage(settings),
            resource=settings.resource.name,
        )
        # one sender per registry: the leader's
        tracker.deliverer = Deliverer.from_settings(
            registry, settings, leading=lambda: tracker._leading
        )
        return tracker

    @classmethod
    def for_resources(
        cls, registry: Registry, runtimes: Sequence[ResourceRuntime], settings: Settings
    ) -> Tracker:
        """The tracker of every resource (pman.resources), in their order."""
        first, *others = runtimes
        tracker = cls.from_settings(registry, first.backend, first.settings)
        tracker.lanes[0].storage = first.storage
        for runtime in others:
            tracker.add_resource(
                runtime.name,
                runtime.backend,
                logs_tail=runtime.resource.jobs.logs_tail,
                max_running=runtime.max_running,
                storage=runtime.storage,
            )
        return tracker

    def add_resource(
        self,
        name: str,
        backend: Backend,
        *,
        logs_tail: int,
        max_running: int = 0,
        storage: Storage | None = None,
    ) -> Lane:
        """Follow one more resource (before ``start``)."""
        lane = Lane(name, backend, logs_tail, max_running, storage)
        self.lanes.append(lane)
        return lane

    @property
    def backend(self) -> Backend:
        """The first resource's backend (the only one without PMAN_RESOURCES)."""
        return self.lanes[0].backend

    @property
    def max_running(self) -> int:
        return self.lanes[0].max_running

    @max_running.setter
    def max_running(self, value: int) -> None:
        self.lanes[0].max_running = value

    @property
    def storage(self) -> Storage | None:
        return self.lanes[0].storage

    @storage.setter
    def storage(self, value: Storage | None) -> None:
        self.lanes[0].storage = value

    @property
    def watching(self) -> bool:
        """Some engine's event stream is open: its changes wake the cycle."""
        return any(lane.watching for lane in self.lanes)

    def lane(self, resource: str) -> Lane | None:
        return next((lane for lane in self.lanes if lane.name == resource), None)

    # ---------------------------------------------------------------- thread
    def start(self) -> None:
        """Start following the engines (again, after ``stop``: reconciling first)."""
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
        for lane in self.lanes:
            lane.thread = threading.Thread(
                target=self._run_watch,
                args=(lane,),
                name=f"pman-tracker-events-{lane.name}",
                daemon=True,
            )
            lane.thread.start()
        if self.deliverer is not None:
            self.deliverer.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for lane in self.lanes:
            stream = lane.stream
            if stream is not None:
                stream.close()
        threads = [self._thread, self._logs_thread, *(lane.thread for lane in self.lanes)]
        for thread in threads:
            if thread is not None:
                thread.join(timeout=10)
        self._thread = self._logs_thread = None
        for lane in self.lanes:
            lane.thread = None
        if self.deliverer is not None:
            self.deliverer.stop()
        self._leading = False
        self.lock.release()

    def request_reconcile(self) -> None:
        """Reconcile with the engines at the next cycle, and start it now."""
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
                # (one resource alone: run_once raised it; its lane reconciles when back)
                log.warning("tracker: engine unavailable (%s); will reconcile when back", e)
            except Exception:
                log.exception("tracker cycle failed")
            # With the engines' events, a change wakes us; poll only as a safety
            # net. Without: unfinished jobs are polled every `interval`; with none,
            # look at the registry every idle interval (a submit made by another
            # process cannot wake us) or when a submit here wakes us.
            if all(lane.watching for lane in self.lanes):
                pause = WATCHED_POLL_S
            else:
                pause = self.interval if busy else self.idle_interval
            self._wake.wait(pause)
            self._wake.clear()

    def _run_watch(self, lane: Lane) -> None:
        """Follow a resource's event stream while leading; each event wakes the cycle."""
        while not self._stop.is_set():
            if not self._leading:
                self._stop.wait(0.5)
                continue
            try:
                stream = lane.backend.watch()
            except BackendUnavailable:
                self._stop.wait(1.0)
                continue
            if stream is None:
                return  # the engine has no events: the cycle polls
            lane.stream = stream
            lane.watching = True
            self._wake.set()  # whatever changed before the stream opened
            if self._stop.is_set():
                stream.close()  # stop() ran before the stream was known to it
            try:
                for name in stream:
                    log.debug("tracker: %s engine event about %r", lane.name, name)
                    if name:
                        with self._changed_lock:
                            self._changed.add(name)
                    self._wake.set()
                    if self._stop.is_set() or not self._leading:
                        break
            except Exception:
                log.exception("tracker: the %s engine's event stream failed", lane.name)
            finally:
                lane.watching = False
                lane.stream = None
                stream.close()
            if not self._stop.is_set():
                log.info(
                    "tracker: the %s engine's event stream ended; polling until it is back",
                    lane.name,
                )
            self._stop.wait(1.0)

    # ---------------------------------------------------------------- cycle
    def run_once(self) -> CycleReport:
        """One cycle over every resource; each reconciles first when due.

        A resource whose engine cannot be reached is left for the next cycle
        (and reconciled when back) while the others go on; with one resource,
        its BackendUnavailable is raised."""
        try:
            report = self._cycle()
        except BackendUnavailable:
            metrics.tracker_cycle("unavailable", self.lanes[0].name)
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
        reconcile_all = self._needs_reconcile or due
        with self._changed_lock:
            told, self._changed = self._changed, set()
        records = self.registry.unfinished()
        report.watched = len(records)
        by_resource: dict[str, list[JobRecord]] = {}
        for record in records:
            by_resource.setdefault(record.resource, []).append(record)
        running: dict[int, tuple[Lane, str]] = {}
        first_outage: BackendUnavailable | None = None
        for lane in self.lanes:
            try:
                if reconcile_all or lane.needs_reconcile:
                    self._reconcile(lane, report)
                    lane.needs_reconcile = False
                self._cycle_lane(lane, by_resource.get(lane.name, []), told, running, report)
            except BackendUnavailable as e:
                if not lane.needs_reconcile:
                    log.warning(
                        "tracker: resource %s: engine unavailable (%s); will reconcile when back",
                        lane.name,
                        e,
                    )
                lane.needs_reconcile = True
                report.unavailable.append(lane.name)
                first_outage = first_outage or e
                if len(self.lanes) > 1:
                    metrics.tracker_cycle("unavailable", lane.name)
        if reconcile_all:
            self._needs_reconcile = False
            self._last_reconcile = time.monotonic()
        self._running = running
        self.last_report = report
        log.debug(
            "tracker cycle: %d watched, %d updated, %d engine calls, %.3f s",
            report.watched,
            report.updated,
            report.engine_calls,
            time.monotonic() - started,
        )
        if first_outage is not None and len(self.lanes) == 1:
            raise first_outage
        return report

    def _cycle_lane(
        self,
        lane: Lane,
        records: list[JobRecord],
        told: set[str],
        running: dict[int, tuple[Lane, str]],
        report: CycleReport,
    ) -> None:
        """One resource's part of a cycle: ONE list of its engine for its jobs."""
        if not records:
            return
        live = {info.name: info for info in lane.backend.list_active()}
        report.engine_calls += 1
        for record in records:
            if record.phase in (Phase.QUEUED, Phase.WITHDRAWN):
                continue  # not on the engine yet; or no job any more
            info = live.get(record.jid)
            with job_context(record.jid):
                self._follow(lane, record, info, report, told=record.jid in told)
            if info is not None and info.state is JobState.RUNNING:
                running[record.id] = (lane, record.jid)
        withdrawn = [r for r in records if r.phase is Phase.WITHDRAWN]
        if withdrawn and time.monotonic() - self._last_withdraw >= WITHDRAW_EVERY_S:
            self._withdraw(lane, withdrawn, report)
        if any(r.phase is Phase.QUEUED for r in records):
            self._start_queued(lane, report)

    def _follow(
        self,
        lane: Lane,
        record: JobRecord,
        live: JobInfo | None,
        report: CycleReport,
        told: bool = False,
    ) -> None:
        # an engine event about the job (``told``) means ask it: its list may
        # not show the change yet (Docker updates the list after the event)
        if live is not None and live.state is record.state and not told:
            return
        young = (datetime.now(UTC) - record.submitted_at).total_seconds() < SUBMIT_GRACE_S
        if live is None and record.phase is Phase.ACCEPTED and young:
            return  # its POST has not reached the engine yet
        try:
            info = lane.backend.get(record.jid)
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
            logs = self._final_logs(lane, record.jid)
            report.engine_calls += 1
        changed = self.registry.record(record.id, info, logs)
        if changed and info.state.finished and info.finished_at is not None:
            ended = info.finished_at
            if ended.tzinfo is None:
                ended = ended.replace(tzinfo=UTC)
            metrics.visibility_lag((datetime.now(UTC) - ended).total_seconds())
        if changed or logs is not None:
            report.updated += 1
