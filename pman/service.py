"""What the API does with a job, between HTTP and the engine: the registry is
the source of truth for polls, the backend is asked only to act."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from pman.backends.base import Backend
from pman.deadlines import Deadline
from pman.errors import (
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.jobs import build_spec
from pman.lifecycle import Phase
from pman.limits import check_request
from pman.models import JobRequest
from pman.registry import Delivery, Event, JobRecord, Page, Registry, Withdrawing, now
from pman.settings import Settings
from pman.settings.webhooks import host_allowed
from pman.storage import Storage
from pman.tracker import Tracker

log = logging.getLogger(__name__)

#: names the v1 API uses for its own routes under /api/v1/
RESERVED_JIDS = frozenset({"jobs", "openapi.json", "auth-token", "docs"})


#: the longest a health check waits for the engine before it says it does not answer
HEALTH_WAIT_S = 5.0


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    created: bool


@dataclass
class _Probe:
    """One check of the engine and the registry, which health requests share."""

    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    problem: str | None = None


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
        self._probe: _Probe | None = None
        self._probe_lock = threading.Lock()

    # -- what the API may know of the engine (it never calls the backend itself)
    @property
    def backend_name(self) -> str:
        return self.backend.name

    def describe_backend(self) -> str:
        return self.backend.describe()

    def check_name(self, jid: str) -> None:
        """InvalidJobSpec unless ``jid`` may name a job: not a route of the API's
        own, and a name the engine accepts."""
        if jid in RESERVED_JIDS:
            raise InvalidJobSpec(
                f"jid {jid!r} is reserved by the API", fields={"jid": "reserved name"}
            )
        self.backend.check_name(jid)

    def submit(self, request: JobRequest, deadline: Deadline | None = None) -> Submitted:
        """Record, then submit: a crash in between leaves a record the tracker
        resolves, never an engine job without a record.

        With a ``deadline``, a job the engine made after the client was given
        up on (answered 503) is removed again, so a refused POST never leaves
        a job behind; so is one whose engine call failed without saying
        whether the engine acted (a time-out): the tracker withdraws it."""
        self.check_name(request.jid)
        image = check_request(request, self.settings.resource.limits)
        self.check_callback(request.callback_url)
        spec = build_spec(request, self.settings, self.storage, image=image)
        # a job the backend can never run is refused before anything is recorded,
        # also one that would wait in pman's queue (PMAN_MAX_RUNNING)
        self.backend.check(spec)
        try:
            record = self.registry.create(
                spec, self.backend.name, max_running=self.settings.resource.jobs.max_running
            )
        except Withdrawing as e:
            raise BackendUnavailable(
                f"an earlier submission of job {spec.name!r} was answered 503 and is being "
                "withdrawn: pman removes what the engine may have made of it; try again "
                "in a few seconds"
            ) from e
        except JobExists as e:
            if e.existing is not None and e.existing.fingerprint == spec.fingerprint:
                return Submitted(self.registry.active(spec.name), created=False)
            raise JobExists(
                f"job {spec.name!r} exists already with a different request; "
                "delete it first or use another jid"
            ) from e
        if record.phase is Phase.QUEUED:
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
        except BackendUnavailable as e:
            # a call that timed out may still be carried out once the engine
            # wakes up: the record keeps the jid until the tracker has removed
            # whatever the engine made of it
            self.storage.undo_output(created)
            self.registry.withdraw(record.id, f"withdrawn: {e.message}")
            self.tracker.wake()
            raise
        except BaseException:
            self.registry.forget(record.id)
            self.storage.undo_output(created)
            raise
        if deadline is not None and not deadline.commit():
            self._undo_late_submit(spec.name, record.id, created)
        self.registry.record(record.id, info)
        self.tracker.wake()
        log.info("job %s submitted to %s", spec.name, self.backend.describe())
        return Submitted(self.registry.get(record.id), created=True)

    def _undo_late_submit(self, jid: str, job_id: int, created: Path | None) -> NoReturn:
        """The engine made the job after its client was answered 503: remove it,
        then the output folder made for it (the job may have written there)."""
        timeout = self.settings.core.engine_timeout
        try:
            self.backend.delete(jid)
        except PmanError as e:
            self.storage.undo_output(created)
            self.registry.withdraw(job_id, f"withdrawn: answered too late; {e.message}")
            self.tracker.wake()
        else:
            self.storage.discard_output(created)
            self.registry.forget(job_id)
        log.warning("job %s: the engine made it after its POST was answered 503; removed", jid)
        raise BackendUnavailable(
            f"the engine did not create job {jid!r} within {timeout:g} s "
            "(PMAN_ENGINE_TIMEOUT); nothing was kept: try again"
        )

    def _visible(self, jid: str, with_labels: bool = True) -> JobRecord:
        """The active job of ``jid``; a withdrawn submission is no job."""
        record = self.registry.active(jid, with_labels=with_labels)
        if record.phase is Phase.WITHDRAWN:
            raise JobNotFound(f"no job named {jid!r} (its submission was refused)")
        return record

    def status(self, jid: str) -> tuple[JobRecord, str]:
        """The job and its latest log lines, from the registry alone: the
        tracker keeps both current, so a poll never waits for the engine."""
        record = self._visible(jid, with_labels=False)
        return record, record.logs or ""

    def health(self, wait: float | None = None) -> str | None:
        """None if the engine and the registry answer, else why not.

        One check runs at a time and answers every health request that came
        while it ran: however many probes arrive, an engine that hangs holds
        one call, and none of them waits more than ``wait`` seconds
        (HEALTH_WAIT_S, or PMAN_ENGINE_TIMEOUT if shorter) for it."""
        wait = min(HEALTH_WAIT_S, self.settings.core.engine_timeout) if wait is None else wait
        with self._probe_lock:
            probe = self._probe
            if probe is None or probe.done.is_set():
                probe = self._probe = _Probe()
                threading.Thread(
                    target=self._check, args=(probe,), name="pman-health", daemon=True
                ).start()
        assert probe is not None
        if not probe.done.wait(wait):
            return (
                f"{self.backend.describe()} did not answer a health check within "
                f"{time.monotonic() - probe.started:.1f} s"
            )
        return probe.problem

    def _check(self, probe: _Probe) -> None:
        try:
            self.backend.ping()
            self.registry.ping()
        except PmanError as e:
            probe.problem = e.message
        except Exception as e:  # a health check must answer whatever happens
            log.exception("health check failed")
            probe.problem = f"health check failed: {e}"
        probe.done.set()

    def delete(self, jid: str) -> None:
        record = self._visible(jid)
        if not self.settings.resource.jobs.remove_jobs:
            log.info("job %s not deleted: REMOVE_JOBS=no", jid)
            return
        if record.phase is Phase.QUEUED and self.registry.dequeue(record.id):
            # it never reached the engine; those behind it move up
            self.registry.refresh_queue_messages(
                self.backend.name, self.settings.resource.jobs.max_running
            )
            log.info("job %s deleted from pman's queue", jid)
            return
        self.backend.delete(jid)
        self.registry.mark_deleted(record.id)
        log.info("job %s deleted", jid)

    def check_callback(self, url: str | None) -> None:
        """A callback this pman can sign, to a host the operator allows."""
        if url is None:
            return
        if not self.settings.webhooks.secret:
            raise UnsupportedOption(
                "callback_url: this pman sends no webhooks (PMAN_WEBHOOK_SECRET is not set)",
                fields={"callback_url": "webhooks are not configured on this pman"},
            )
        if not host_allowed(url, self.settings.webhooks.allowed_hosts):
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
        record = self._visible(jid)
        if record.state.finished:
            return record
        asked_at = now()
        try:
            info = self.backend.get(jid)
        except JobNotFound:
            info = None
            if record.phase is Phase.ACCEPTED:
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
            return self.backend.logs(jid, self.settings.resource.jobs.logs_tail)
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
        self._visible(jid, with_labels=False)
        return self.backend.iter_logs(jid, tail=tail, since=since, follow=follow)

    def events(self, jid: str) -> tuple[JobRecord, list[Event]]:
        record = self.registry.latest(jid)
        return record, self.registry.events(record.id)

    def list(self, **filters: object) -> Page:
        return self.registry.list(**filters)  # type: ignore[arg-type]
