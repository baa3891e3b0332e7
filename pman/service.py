"""What the API does with a job, between HTTP and the engine: the registry is
the source of truth for polls, the backend is asked only to act."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

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
from pman.jobs import labelled_for
from pman.lifecycle import Phase
from pman.models import JobRequest
from pman.registry import Delivery, Event, JobRecord, Page, Registry, Withdrawing, now
from pman.resources import HEALTH_WAIT_S, HealthProbe, ResourceRuntime, Router
from pman.settings import Settings
from pman.settings.webhooks import host_allowed
from pman.storage import Storage
from pman.tracker import Tracker

log = logging.getLogger(__name__)

#: names the v1 API uses for its own routes under /api/v1/
RESERVED_JIDS = frozenset({"jobs", "openapi.json", "auth-token", "docs", "resources"})


#: GET /api/v1/resources/: the longest it waits for an engine's health check,
#: and how recent a check it takes as it is
RESOURCES_WAIT_S = 2.0
RESOURCES_FRESH_S = 5.0


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    created: bool


@dataclass(frozen=True)
class Health:
    """What a health check found: ``problem`` (None: healthy) makes /health a
    503, which only the registry or every resource being down does; each
    resource's own problem (None: its engine answers)."""

    problem: str | None
    resources: dict[str, str | None]


class JobService:
    def __init__(
        self,
        settings: Settings,
        runtimes: Sequence[ResourceRuntime],
        registry: Registry,
        tracker: Tracker,
    ) -> None:
        self.settings = settings
        self.runtimes = tuple(runtimes)
        self.by_name = {r.name: r for r in self.runtimes}
        self.router = Router(self.runtimes, registry)
        self.registry = registry
        self.tracker = tracker
        self._registry_probe = HealthProbe(registry.ping, lambda: "the job registry")

    # -- the first resource (the only one without PMAN_RESOURCES)
    @property
    def backend(self) -> Backend:
        return self.runtimes[0].backend

    @property
    def storage(self) -> Storage:
        return self.runtimes[0].storage

    # -- what the API may know of the engines (it never calls a backend itself)
    @property
    def backend_name(self) -> str:
        return self.backend.name

    def describe_backend(self) -> str:
        return self.backend.describe()

    def resource_names(self) -> list[str]:
        return [r.name for r in self.runtimes]

    def resource_backends(self) -> dict[str, str]:
        """Each resource's backend name, in order (for /metrics)."""
        return {r.name: r.backend.name for r in self.runtimes}

    def _runtime(self, name: str) -> ResourceRuntime:
        """The runtime of a configured resource; a job of one that is not (any
        more) cannot be acted on."""
        runtime = self.by_name.get(name)
        if runtime is None:
            raise UnsupportedOption(
                f"the job ran on compute resource {name!r}, which this pman no longer "
                f"serves (PMAN_RESOURCES: {', '.join(self.by_name)}); its record stays "
                "readable, but nothing can be done with it on an engine",
                fields={"compute_resource": f"{name!r} is not configured"},
            )
        return runtime

    def check_name(self, jid: str) -> None:
        """InvalidJobSpec unless ``jid`` may name a job: not a route of the API's
        own, and a name some resource's engine accepts."""
        if jid in RESERVED_JIDS:
            raise InvalidJobSpec(
                f"jid {jid!r} is reserved by the API", fields={"jid": "reserved name"}
            )
        first: InvalidJobSpec | None = None
        for runtime in self.runtimes:
            try:
                runtime.backend.check_name(jid)
                return
            except InvalidJobSpec as e:
                first = first or e
        assert first is not None
        raise first

    def check_pinned(self, pinned: str | None, record: JobRecord) -> JobRecord:
        """A job of another resource than the URL's is not found there."""
        if pinned is not None and record.resource != pinned:
            raise JobNotFound(f"no job named {record.jid!r} on compute resource {pinned!r}")
        return record

    def submit(
        self,
        request: JobRequest,
        deadline: Deadline | None = None,
        pinned: str | None = None,
        compute_resource: str | None = None,
    ) -> Submitted:
        """Record, then submit: a crash in between leaves a record the tracker
        resolves, never an engine job without a record.

        The resource is the one the request names (``compute_resource``) or
        the URL pins (``pinned``),
        else the Router's choice. With a ``deadline``, a job the engine made
        after the client was given up on (answered 503) is removed again, so a
        refused POST never leaves a job behind; so is one whose engine call
        failed without saying whether the engine acted (a time-out): the
        tracker withdraws it."""
        if request.jid in RESERVED_JIDS:
            self.check_name(request.jid)
        # a job no resource can ever run is refused before anything is recorded,
        # also one that would wait in pman's queue (PMAN_MAX_RUNNING)
        runtime, spec = self.router.place(
            request,
            compute_resource,
            pinned,
            also=lambda: self.check_callback(request.callback_url),
        )
        backend, storage = runtime.backend, runtime.storage
        try:
            record = self.registry.create(
                spec, backend.name, max_running=runtime.max_running, resource=runtime.name
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
            created = storage.prepare_output(spec.mounts)
            info = backend.submit(labelled_for(spec, runtime.name))
        except JobExists as e:
            storage.undo_output(created)
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
            storage.undo_output(created)
            self.registry.withdraw(record.id, f"withdrawn: {e.message}")
            self.tracker.wake()
            raise
        except BaseException:
            self.registry.forget(record.id)
            storage.undo_output(created)
            raise
        if deadline is not None and not deadline.commit():
            self._undo_late_submit(runtime, spec.name, record.id, created)
        self.registry.record(record.id, info)
        self.tracker.wake()
        log.info("job %s submitted to %s (%s)", spec.name, backend.describe(), runtime.name)
        return Submitted(self.registry.get(record.id), created=True)

    def _undo_late_submit(
        self, runtime: ResourceRuntime, jid: str, job_id: int, created: Path | None
    ) -> NoReturn:
        """The engine made the job after its client was answered 503: remove it,
        then the output folder made for it (the job may have written there)."""
        timeout = self.settings.core.engine_timeout
        try:
            runtime.backend.delete(jid)
        except PmanError as e:
            runtime.storage.undo_output(created)
            self.registry.withdraw(job_id, f"withdrawn: answered too late; {e.message}")
            self.tracker.wake()
        else:
            runtime.storage.discard_output(created)
            self.registry.forget(job_id)
        log.warning("job %s: the engine made it after its POST was answered 503; removed", jid)
        raise BackendUnavailable(
            f"the engine did not create job {jid!r} within {timeout:g} s "
            "(PMAN_ENGINE_TIMEOUT); nothing was kept: try again"
        )

    def _visible(self, jid: str, with_labels: bool = True, pinned: str | None = None) -> JobRecord:
        """The active job of ``jid``; a withdrawn submission is no job."""
        record = self.registry.active(jid, with_labels=with_labels)
        if record.phase is Phase.WITHDRAWN:
            raise JobNotFound(f"no job named {jid!r} (its submission was refused)")
        return self.check_pinned(pinned, record)

    def status(self, jid: str, pinned: str | None = None) -> tuple[JobRecord, str]:
        """The job and its latest log lines, from the registry alone: the
        tracker keeps both current, so a poll never waits for the engine."""
        record = self._visible(jid, with_labels=False, pinned=pinned)
        return record, record.logs or ""

    def health(self, wait: float | None = None) -> str | None:
        """None if the registry and some resource's engine answer, else why not
        (see :meth:`health_report`)."""
        return self.health_report(wait).problem

    def health_report(self, wait: float | None = None) -> Health:
        """The registry's and each resource's health, each checked by one probe
        at a time (pman.resources.HealthProbe): however many health requests
        arrive, an engine that hangs holds one call, and none of them waits
        more than ``wait`` seconds (HEALTH_WAIT_S, or PMAN_ENGINE_TIMEOUT if
        shorter). Unhealthy when the registry or every resource is down."""
        wait = min(HEALTH_WAIT_S, self.settings.core.engine_timeout) if wait is None else wait
        resources = {r.name: r.probe.problem(wait) for r in self.runtimes}
        registry = self._registry_probe.problem(wait)
        problems = [p for p in resources.values() if p is not None]
        problem = None
        if len(problems) == len(resources):
            if len(resources) == 1:
                problem = problems[0]
            else:
                problem = "no compute resource answers: " + "; ".join(
                    f"{name}: {p}" for name, p in resources.items()
                )
        if problem is None and registry is not None:
            problem = registry
        return Health(problem, resources)

    def describe_resources(self, pinned: str | None = None) -> list[dict[str, Any]]:
        """Each resource (the URL's alone when ``pinned``), for GET /api/v1/resources/:
        its health as a check of the last few seconds found it, or a new check
        of at most RESOURCES_WAIT_S (the list is a quick request)."""
        wait = min(RESOURCES_WAIT_S, self.settings.core.engine_timeout)
        out = []
        for runtime in self.runtimes:
            if pinned is not None and runtime.name != pinned:
                continue
            running, queued = self.registry.occupancy(runtime.backend.name, runtime.name)
            problem = runtime.probe.problem(wait, fresh=RESOURCES_FRESH_S)
            out.append(
                {
                    "name": runtime.name,
                    "backend": runtime.backend.name,
                    "description": runtime.description,
                    "capabilities": {
                        **runtime.backend.capabilities.as_dict(),
                        "gpus": runtime.backend.capabilities.gpus and runtime.resource.limits.gpus,
                    },
                    "caps": runtime.caps(),
                    "running": running,
                    "queued": queued,
                    "healthy": problem is None,
                    "problem": problem,
                }
            )
        return out

    def delete(self, jid: str, pinned: str | None = None) -> None:
        record = self._visible(jid, pinned=pinned)
        runtime = self._runtime(record.resource)
        if not runtime.resource.jobs.remove_jobs:
            log.info("job %s not deleted: REMOVE_JOBS=no", jid)
            return
        if record.phase is Phase.QUEUED and self.registry.dequeue(record.id):
            # it never reached the engine; those behind it move up
            self.registry.refresh_queue_messages(
                runtime.backend.name, runtime.max_running, resource=runtime.name
            )
            log.info("job %s deleted from pman's queue", jid)
            return
        runtime.backend.delete(jid)
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

    def deliveries(self, jid: str, pinned: str | None = None) -> tuple[JobRecord, list[Delivery]]:
        record = self.check_pinned(pinned, self.registry.latest(jid))
        return record, self.registry.deliveries(record.id)

    def cancel(self, jid: str, pinned: str | None = None) -> JobRecord:
        """Stop the job on the engine, keep its record and logs: CANCELLED
        ("cancelled") for good. A job that has finished already is left as it
        is (cancelling is idempotent)."""
        record = self._visible(jid, pinned=pinned)
        if record.state.finished:
            return record
        runtime = self._runtime(record.resource)
        backend = runtime.backend
        asked_at = now()
        try:
            info = backend.get(jid)
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
            self.registry.record(record.id, info, self._tail(runtime, jid))
            return self.registry.get(record.id)
        logs = None
        if info is not None:
            # read before too: some engines drop the logs with the work (a
            # suspended Kubernetes Job deletes its pods)
            before = self._tail(runtime, jid)
            backend.cancel(jid)
            logs = self._tail(runtime, jid) or before
        self.registry.mark_cancelled(record.id, asked_at, logs)
        self.tracker.wake()
        log.info("job %s cancelled", jid)
        return self.registry.get(record.id)

    def _tail(self, runtime: ResourceRuntime, jid: str) -> str | None:
        """The job's last log lines, or None when the engine cannot give them."""
        try:
            return runtime.backend.logs(jid, runtime.resource.jobs.logs_tail)
        except BackendUnavailable:
            raise
        except PmanError as e:
            log.warning("job %s: could not read its final logs: %s", jid, e.message)
            return None

    def logs(
        self,
        jid: str,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        pinned: str | None = None,
    ) -> Iterator[bytes]:
        """The job's logs as the engine keeps them, in chunks (see Backend.iter_logs).
        Raises before the first chunk for an unknown job or an unsupported option."""
        record = self._visible(jid, with_labels=False, pinned=pinned)
        backend = self._runtime(record.resource).backend
        return backend.iter_logs(jid, tail=tail, since=since, follow=follow)

    def events(self, jid: str, pinned: str | None = None) -> tuple[JobRecord, list[Event]]:
        record = self.check_pinned(pinned, self.registry.latest(jid))
        return record, self.registry.events(record.id)

    def list(self, **filters: object) -> Page:
        return self.registry.list(**filters)  # type: ignore[arg-type]
