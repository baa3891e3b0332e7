"""What the API does with a job, between HTTP and the engine: the registry is
the source of truth for polls, the backend is asked only to act."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pman.backends.base import Backend
from pman.errors import InvalidJobSpec, JobExists
from pman.jobs import build_spec
from pman.models import JobRequest
from pman.registry import Event, JobRecord, Page, Registry
from pman.settings import Settings
from pman.storage import Storage
from pman.tracker import Tracker

log = logging.getLogger(__name__)

#: names the v1 API uses for its own routes under /api/v1/
RESERVED_JIDS = frozenset({"jobs", "openapi.json"})


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
        created = None
        try:
            created = self.storage.prepare_output(spec.mounts)
            info = self.backend.submit(spec)
        except JobExists as e:
            self.storage.undo_output(created)
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
            self.storage.undo_output(created)
            raise
        self.registry.record(record.id, info)
        self.tracker.wake()
        log.info("job %s submitted to %s", spec.name, self.backend.describe())
        return Submitted(self.registry.get(record.id), created=True)

    def status(self, jid: str) -> tuple[JobRecord, str]:
        """The job and its latest log lines, from the registry alone: the
        tracker keeps both current, so a poll never waits for the engine."""
        record = self.registry.active(jid, with_labels=False)
        return record, record.logs or ""

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
