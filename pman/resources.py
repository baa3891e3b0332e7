"""The compute resources one pman serves, at run time: each resource's
backend, storage and health, and the choice of a resource for a new job.

Every resource (pman.settings.Resource, in PMAN_RESOURCES order) gets a
:class:`ResourceRuntime`: its backend built from its own settings (a view of
pman's settings whose ``resource`` is that one, so every engine's
``from_settings`` and pman's job building read that resource's variables),
its storage (STOREBASE...) and a health probe of its engine. The
:class:`Router` picks the resource of a new job: the one it names (or the URL
pins), else the first able one, overflowing past one at its PMAN_MAX_RUNNING
when that resource allows it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pman.backends import load_backend
from pman.backends.base import Backend
from pman.errors import InvalidJobSpec, PmanError
from pman.jobs import build_spec
from pman.limits import check_request
from pman.metrics import instrument
from pman.models import JobRequest, JobSpec
from pman.settings import Resource, Settings
from pman.storage import Storage

if TYPE_CHECKING:
    from pman.registry import Registry

log = logging.getLogger(__name__)

#: the longest a health check waits for an engine before it says it does not answer
HEALTH_WAIT_S = 5.0

#: the request field that names a resource
FIELD = "compute_resource"


def scoped(settings: Settings, resource: Resource) -> Settings:
    """pman's settings as one resource's code reads them: ``settings.resource``
    is ``resource`` (the global sections are everyone's)."""
    return dataclasses.replace(settings, resources=(resource,))


@dataclass
class _Probe:
    """One check of an engine, which health requests share."""

    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    problem: str | None = None
    ended: float = 0.0


class HealthProbe:
    """Checks one thing (an engine) for health requests: one check runs at a
    time and answers every request that came while it ran, so however many
    probes arrive an engine that hangs holds one call, and no request waits
    more than its ``wait`` for it."""

    def __init__(self, check: Callable[[], None], describe: Callable[[], str]) -> None:
        self._check_fn = check
        self._describe = describe
        self._probe: _Probe | None = None
        self._lock = threading.Lock()

    def problem(self, wait: float, fresh: float = 0.0) -> str | None:
        """None if the check passes within ``wait`` seconds, else why not; a
        check that ended less than ``fresh`` seconds ago answers as it did."""
        with self._lock:
            probe = self._probe
            if probe is not None and probe.done.is_set() and time.monotonic() - probe.ended < fresh:
                return probe.problem
            if probe is None or probe.done.is_set():
                probe = self._probe = _Probe()
                threading.Thread(
                    target=self._run, args=(probe,), name="pman-health", daemon=True
                ).start()
        if not probe.done.wait(wait):
            return (
                f"{self._describe()} did not answer a health check within "
                f"{time.monotonic() - probe.started:.1f} s"
            )
        return probe.problem

    def _run(self, probe: _Probe) -> None:
        try:
            self._check_fn()
        except PmanError as e:
            probe.problem = e.message
        except Exception as e:  # a health check must answer whatever happens
            log.exception("health check failed")
            probe.problem = f"health check failed: {e}"
        probe.ended = time.monotonic()
        probe.done.set()


@dataclass
class ResourceRuntime:
    """One compute resource as the service and the tracker use it."""

    resource: Resource
    #: pman's settings with this resource as ``settings.resource``
    settings: Settings
    backend: Backend
    storage: Storage
    probe: HealthProbe = field(init=False)

    def __post_init__(self) -> None:
        self.probe = HealthProbe(self.backend.ping, self.backend.describe)

    @property
    def name(self) -> str:
        return self.resource.name

    @property
    def max_running(self) -> int:
        return self.resource.jobs.max_running

    @property
    def overflow(self) -> bool:
        return self.resource.jobs.overflow

    @property
    def description(self) -> str:
        return self.resource.jobs.description

    def prepare(self, request: JobRequest, also: Callable[[], None] | None = None) -> JobSpec:
        """The job ``request`` makes on this resource, or the InvalidJobSpec (naming
        its fields) that says why this resource cannot run it. No engine call.
        ``also``: a check of the request's own, made between the limits' and the
        folders' (the order of pman's answers with one resource)."""
        self.backend.check_name(request.jid)
        image = check_request(request, self.resource.limits)
        if also is not None:
            also()
        spec = build_spec(request, self.settings, self.storage, image=image)
        self.backend.check(spec)
        return spec

    def caps(self) -> dict[str, Any]:
        """The resource's own caps on jobs (PMAN_MAX_*)."""
        limits = self.resource.limits
        return {
            "max_running": self.max_running,
            "max_cpu_limit": limits.max_cpu_limit,
            "max_memory_limit": limits.max_memory_limit,
            "max_gpu_limit": limits.max_gpu_limit,
            "max_workers": limits.max_workers,
            "image_allowlist": [pattern.text for pattern in limits.image_allowlist],
        }


def build_runtimes(
    settings: Settings,
    backends: Mapping[str, Backend] | None = None,
    load: Callable[[str, Settings], Backend] = load_backend,
) -> tuple[ResourceRuntime, ...]:
    """A runtime for each resource of ``settings``, in order; ``backends`` by
    resource name are used as given (tests), the others built from the
    resource's settings (ConfigError on a bad one). Every backend is told its
    resource and has its engine calls measured."""
    runtimes = []
    for resource in settings.resources:
        view = scoped(settings, resource)
        backend = (backends or {}).get(resource.name)
        if backend is None:
            backend = load(resource.container_env, view)
        inner = getattr(backend, "inner", backend)  # an instrumented one: its adapter
        inner.resource = resource.name
        runtimes.append(
            ResourceRuntime(resource, view, instrument(backend, resource.name), Storage(view))
        )
    return tuple(runtimes)


def _cannot(name: str, error: InvalidJobSpec) -> str:
    return f"resource {name!r} cannot run this job: {error.message}"


class Router:
    """Which resource a new job goes to (pman.settings.resources: the order)."""

    def __init__(self, runtimes: Sequence[ResourceRuntime], registry: Registry) -> None:
        self.runtimes = tuple(runtimes)
        self.registry = registry

    def named(self, name: str) -> ResourceRuntime | None:
        return next((r for r in self.runtimes if r.name == name), None)

    def unknown(self, name: str, pinned: str | None = None) -> InvalidJobSpec:
        names = ", ".join(r.name for r in self.runtimes)
        if pinned is not None:
            why = f"this URL serves resource {pinned!r} only"
            return InvalidJobSpec(
                f"{FIELD}: {why}, not {name!r}", fields={FIELD: f"{why}: leave it out"}
            )
        return InvalidJobSpec(
            f"{FIELD}: no compute resource named {name!r} (resources: {names})",
            fields={FIELD: f"unknown resource; one of {names}"},
        )

    def place(
        self,
        request: JobRequest,
        wanted: str | None = None,
        pinned: str | None = None,
        also: Callable[[], None] | None = None,
    ) -> tuple[ResourceRuntime, JobSpec]:
        """The resource for ``request`` and the job it makes there; InvalidJobSpec
        (400) when none can take it.

        A resource the job names (``wanted``: its ``compute_resource``; not a
        field of JobRequest, whose fingerprint is the job's) or the URL pins must
        be able to run it. Otherwise the first resource in order that can,
        unless it is at its PMAN_MAX_RUNNING and allows PMAN_OVERFLOW: then
        the next able one with room (none: it waits in the first one's queue).
        With one resource and nothing named, its errors are the answer as they
        always were. ``also``: a check of the request that is no resource's
        (ResourceRuntime.prepare)."""
        if len(self.runtimes) > 1 and also is not None:
            also()  # once, not as every resource's refusal
            also = None
        named = wanted
        if wanted is not None and pinned is not None and wanted != pinned:
            raise self.unknown(wanted, pinned)
        wanted = wanted if wanted is not None else pinned
        if wanted is not None:
            runtime = self.named(wanted)
            if runtime is None:
                raise self.unknown(wanted)
            try:
                return runtime, runtime.prepare(request, also)
            except InvalidJobSpec as e:
                if named is None:
                    raise  # pinned by URL: that resource's own answer, as pman alone
                raise _refused(e, _cannot(runtime.name, e)) from None
        able: list[tuple[ResourceRuntime, JobSpec]] = []
        refusals: list[tuple[str, InvalidJobSpec]] = []
        for runtime in self.runtimes:
            try:
                able.append((runtime, runtime.prepare(request, also)))
            except InvalidJobSpec as e:
                refusals.append((runtime.name, e))
        if not able:
            if len(self.runtimes) == 1:
                raise refusals[0][1]
            reasons = "; ".join(_cannot(name, e) for name, e in refusals)
            error = refusals[0][1]
            fields: dict[str, str] = {}
            for _, e in refusals:
                fields.update(e.fields)
            fields[FIELD] = "no compute resource can run this job"
            raise type(error)(f"no compute resource can run this job: {reasons}", fields=fields)
        first = able[0]
        if not first[0].overflow or not self.full(first[0]):
            return first
        for candidate in able[1:]:
            if not self.full(candidate[0]):
                log.info(
                    "job %s: resource %s is full (PMAN_OVERFLOW): sent to %s",
                    request.jid,
                    first[0].name,
                    candidate[0].name,
                )
                return candidate
        return first

    def full(self, runtime: ResourceRuntime) -> bool:
        """The resource has PMAN_MAX_RUNNING jobs on its engine, or some waiting."""
        if runtime.max_running <= 0:
            return False
        on_engine, waiting = self.registry.occupancy(runtime.backend.name, runtime.name)
        return waiting > 0 or on_engine >= runtime.max_running


def _refused(error: InvalidJobSpec, message: str) -> InvalidJobSpec:
    """``error`` of the resource the request named, as the 400 of its field."""
    fields = dict(error.fields)
    fields[FIELD] = f"cannot run this job: {error.message}"
    return type(error)(message, fields=fields)
