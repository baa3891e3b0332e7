"""What the API does with a job, between HTTP and the engine: the registry is
the source of truth for polls, the backend is asked only to act."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pman.backends.base import Backend
from pman.errors import InvalidJobSpec, JobExists, PmanError
from pman.jobs import build_spec
from pman.models import JobRequest, JobState
from pman.registry import Event, JobRecord, Page, Registry
from pman.settings import Settings
from pman.storage import Storage
from pman.tracker import Tracker

log = logging.getLogger(__name__)

#: names the v1 API uses for its own routes under /api/v1/
RESERVED_JIDS = frozenset({"jobs", "openapi.json"})


class LiveLogs:
    """Live logs of running jobs, shared by all polls of a worker.

    A poll never waits for the engine once a job's logs were fetched: it gets
    the copy at hand, and a copy older than ``ttl`` seconds is refreshed in the
    background (one refresh per job at a time). So many clients polling a job
    cost the engine at most one logs call per ``ttl``, and none of them waits
    for it. Only a job's first poll fetches its logs in line.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, fetch: Callable[[str], str], ttl: float) -> None:
        self.fetch = fetch
        self.ttl = ttl
        self._entries: dict[str, tuple[float, str]] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pman-logs")

    def get(self, jid: str) -> str:
        with self._lock:
            hit = self._entries.get(jid)
            stale = hit is None or time.monotonic() - hit[0] > self.ttl
            if hit is not None and stale and jid not in self._refreshing:
                self._refreshing.add(jid)
                self._pool.submit(self._refresh, jid)
        if hit is not None:
            return hit[1]
        return self._refresh(jid)

    def _refresh(self, jid: str) -> str:
        try:
            logs = self.fetch(jid)
        except PmanError as e:
            log.info("logs of %s unavailable: %s", jid, e.message)
            logs = None
        finally:
            with self._lock:
                self._refreshing.discard(jid)
        if logs is None:
            return ""
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:  # bounded: keep the fresher half
                newest = sorted(self._entries.items(), key=lambda kv: kv[1][0])
                self._entries = dict(newest[len(newest) // 2 :])
            self._entries[jid] = (time.monotonic(), logs)
        return logs

    def forget(self, jid: str) -> None:
        with self._lock:
            self._entries.pop(jid, None)


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    created: bool


class JobService:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        storage: Storage,
        registry: Registry,
        tracker: Tracker,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.storage = storage
        self.registry = registry
        self.tracker = tracker
        self.live_logs = LiveLogs(
            lambda jid: backend.logs(jid, settings.job_logs_tail), settings.logs_cache_seconds
        )

    def check_name(self, jid: str) -> None:
        if jid in RESERVED_JIDS:
            raise InvalidJobSpec(
                f"jid {jid!r} is reserved by the API", fields={"jid": "reserved name"}
            )
        self.backend.check_name(jid)

    def submit(self, request: JobRequest) -> Submitted:
        """Record, then submit: a crash in between leaves a record the tracker
        resolves, never an engine job without a record."""
        self.check_name(request.jid)
        spec = build_spec(request, self.settings, self.storage)
        try:
            record = self.registry.create(spec, self.backend.name)
        except JobExists as e:
            if e.existing is not None and e.existing.fingerprint == spec.fingerprint:
                return Submitted(self.registry.active(spec.name), created=False)
            raise JobExists(
                f"job {spec.name!r} exists already with a different request; "
                "delete it first or use another jid"
            ) from e
        try:
            self.storage.prepare_output(spec.mounts)
            info = self.backend.submit(spec)
        except JobExists as e:
            if e.existing is not None and e.existing.fingerprint == spec.fingerprint:
                # ours from before the registry knew it (e.g. a lost database)
                self.registry.record(record.id, e.existing)
                return Submitted(self.registry.get(record.id), created=False)
            self.registry.forget(record.id)
            raise JobExists(
                f"the engine has a job named {spec.name!r} that pman did not record; "
                "use another jid"
            ) from e
        except BaseException:
            self.registry.forget(record.id)
            raise
        self.registry.record(record.id, info)
        self.tracker.wake()
        log.info("job %s submitted to %s", spec.name, self.backend.describe())
        return Submitted(self.registry.get(record.id), created=True)

    def status(self, jid: str) -> tuple[JobRecord, str]:
        """The job from the registry, and its latest log lines."""
        record = self.registry.active(jid, with_labels=False)
        return record, self._logs(record)

    def _logs(self, record: JobRecord) -> str:
        if record.state.finished:
            self.live_logs.forget(record.jid)
            return record.logs or ""
        if record.state is JobState.QUEUED:
            return ""
        return self.live_logs.get(record.jid)

    def delete(self, jid: str) -> None:
        record = self.registry.active(jid)
        if not self.settings.remove_jobs:
            log.info("job %s not deleted: REMOVE_JOBS=no", jid)
            return
        self.backend.delete(jid)
        self.registry.mark_deleted(record.id)
        log.info("job %s deleted", jid)

    def events(self, jid: str) -> tuple[JobRecord, list[Event]]:
        record = self.registry.latest(jid)
        return record, self.registry.events(record.id)

    def list(self, **filters: object) -> Page:
        return self.registry.list(**filters)  # type: ignore[arg-type]
