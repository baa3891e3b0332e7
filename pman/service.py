"""What the API does with a job, between HTTP and the engine: the registry is
the source of truth for polls, the backend is asked only to act."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pman.backends.base import Backend
from pman.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.jobs import build_spec
from pman.limits import check_request
from pman.models import JobRequest
from pman.registry import QUEUE_REASON, Delivery, Event, JobRecord, Page, Registry, now
from pman.settings import Settings
from pman.storage import Storage
from pman.tracker import Tracker
from pman.webhooks import host_allowed

log = logging.getLogger(__name__)

#: names the v1 API uses for its own routes under /api/v1/
RESERVED_JIDS = frozenset({"jobs", "openapi.json", "auth-token", "docs"})


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
        image = check_request(request, self.settings.limits)
        self.check_callback(request.callback_url)
        spec = build_spec(request, self.settings, self.storage, image=image)
        try:
            record = self.registry.create(
                spec, self.backend.name, max_running=self.settings.max_running
            )
        except JobExists as e:
            if e.existing is not None and e.existing.fingerprint == spec.fingerprint:
                return Submitted(self.registry.active(spec.name), created=False)
            raise JobExists(
                f"job {spec.name!r} exists already with a different request; "
                "delete it first or use another jid"
            ) from e
        if record.reason == QUEUE_REASON:
            # the engine is at PMAN_MAX_RUNNING: the tracker starts it in its turn
            self.tracker.wake()
            log.info("job %s queued: %s", spec.name, record.message)
            return Submitted(record, created=True)
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
        if record.reason == QUEUE_REASON and self.registry.dequeue(record.id):
            # it never reached the engine; those behind it move up
            self.registry.refresh_queue_messages(self.backend.name, self.settings.max_running)
            log.info("job %s deleted from pman's queue", jid)
            return
        self.backend.delete(jid)
        self.registry.mark_deleted(record.id)
        log.info("job %s deleted", jid)

    def check_callback(self, url: str | None) -> None:
        """A callback this pman can sign, to a host the operator allows."""
        if url is None:
            return
        if not self.settings.webhook_secret:
            raise UnsupportedOption(
                "callback_url: this pman sends no webhooks (PMAN_WEBHOOK_SECRET is not set)",
                fields={"callback_url": "webhooks are not configured on this pman"},
            )
        if not host_allowed(url, self.settings.webhook_allowed_hosts):
            raise UnsupportedOption(
                "callback_url: its host is not one PMAN_WEBHOOK_ALLOWED_HOSTS allows",
                fields={"callback_url": "host not allowed"},
            )

    def deliveries(self, jid: str) -> tuple[JobRecord, list[Delivery]]:
        record = self.registry.latest(jid)
        return record, self.registry.deliveries(record.id)

    def cancel(self, jid: str) -> JobRecord:
        """Stop the job on the engine, keep its record and logs: CANCELLED
        ("cancelled") for good. A job that has finished already is left as it
        is (cancelling is idempotent)."""
        record = self.registry.active(jid)
        if record.state.finished:
            return record
        asked_at = now()
        try:
            info = self.backend.get(jid)
        except JobNotFound:
            info = None
            if record.message == "submitting":
                # its POST is on its way to the engine: cancelling now would
                # let the job start after the record says it was cancelled
                raise JobExists(
                    f"job {jid!r} is being submitted; cancel it again in a moment"
                ) from None
        if info is not None and info.state.finished:
            # it ended before the cancel: record how, as the tracker would
            self.registry.record(record.id, info, self._tail(jid))
            return self.registry.get(record.id)
        logs = None
        if info is not None:
            # read before too: some engines drop the logs with the work (a
            # suspended Kubernetes Job deletes its pods)
            before = self._tail(jid)
            self.backend.cancel(jid)
            logs = self._tail(jid) or before
        self.registry.mark_cancelled(record.id, asked_at, logs)
        self.tracker.wake()
        log.info("job %s cancelled", jid)
        return self.registry.get(record.id)

    def _tail(self, jid: str) -> str | None:
        """The job's last log lines, or None when the engine cannot give them."""
        try:
            return self.backend.logs(jid, self.settings.job_logs_tail)
        except BackendUnavailable:
            raise
        except PmanError as e:
            log.warning("job %s: could not read its final logs: %s", jid, e.message)
            return None

    def logs(
        self, jid: str, tail: int | None, since: datetime | None, follow: bool
    ) -> Iterator[bytes]:
        """The job's logs as the engine keeps them, in chunks (see Backend.iter_logs).
        Raises before the first chunk for an unknown job or an unsupported option."""
        self.registry.active(jid, with_labels=False)
        return self.backend.iter_logs(jid, tail=tail, since=since, follow=follow)

    def events(self, jid: str) -> tuple[JobRecord, list[Event]]:
        record = self.registry.latest(jid)
        return record, self.registry.events(record.id)

    def list(self, **filters: object) -> Page:
        return self.registry.list(**filters)  # type: ignore[arg-type]
