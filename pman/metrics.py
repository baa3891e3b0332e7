"""Prometheus metrics (prometheus-client): what pman counts and how a scrape reads it.

Counters and histograms are written where things happen: HTTP requests by
the API's middleware, engine calls by :class:`InstrumentedBackend` (one
proxy around whichever backend runs: no adapter knows about metrics),
tracker cycles by the tracker. Values that the registry knows better (jobs
by state, the queue) are counted at scrape time with one query.

``pman serve`` runs several worker processes and a tracker process; it sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before any of them starts, so
each process writes its values to files there and a scrape, whichever worker
answers it, adds up every process's (prometheus-client's multiprocess mode).
Without that variable (tests, a single process) the values live in memory.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from pman.errors import PmanError
from pman.models import JobState

if TYPE_CHECKING:
    from pman.backends.base import Backend
    from pman.registry import Registry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: a poll is ~0.5 ms, a POST to an engine ~0.5 s: buckets for both ends
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ENGINE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter(
    "pman_http_requests",
    "HTTP requests answered, by method, route template and status code",
    ["method", "route", "code"],
)
HTTP_DURATION = Histogram(
    "pman_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts), by method and route template",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
ENGINE_DURATION = Histogram(
    "pman_engine_call_duration_seconds",
    "Time of one call to the engine, by backend, compute resource and operation, "
    "failed calls included",
    ["backend", "operation", "resource"],
    buckets=ENGINE_BUCKETS,
)
ENGINE_ERRORS = Counter(
    "pman_engine_errors",
    "Engine calls that raised, by backend, operation, pman's error class and compute "
    "resource (JobNotFound from get is how a tracker learns a job vanished)",
    ["backend", "operation", "kind", "resource"],
)
TRACKER_CYCLES = Counter(
    "pman_tracker_cycles",
    "Tracker cycles run by the leading tracker, by result (ok, unavailable, failed); "
    'resource: the compute resource whose engine was unavailable, else ""',
    ["result", "resource"],
)
TRACKER_LAST_CYCLE = Gauge(
    "pman_tracker_last_cycle_timestamp_seconds",
    "Unix time the leading tracker last completed a cycle",
    multiprocess_mode="max",
)
TRACKER_VISIBILITY_LAG = Histogram(
    "pman_tracker_visibility_lag_seconds",
    "Seconds from a job's end on the engine (its end time as the engine reports it) "
    "to the registry recording it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)

REFUSED = Counter(
    "pman_refused_requests",
    "Requests the server answered before the application saw them, by lane and status: "
    "408 body too slow, 429 log streams over their cap, 503 engine lane full or past "
    "PMAN_ENGINE_TIMEOUT",
    ["lane", "code"],
)
LOG_STREAMS = Gauge(
    "pman_log_streams_open",
    "Log streams being served, per process (summed over processes when scraped)",
    multiprocess_mode="livesum",
)

#: the operations InstrumentedBackend times: every method that reaches the engine
ENGINE_OPERATIONS = (
    "submit",
    "get",
    "logs",
    "delete",
    "cancel",
    "list",
    "list_active",
    "ping",
    "watch",
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


# ---------------------------------------------------------------- HTTP requests
class RequestTally:
    """HTTP requests counted in plain memory and written to the metrics above
    every ``flush_every`` seconds (and before this process answers a scrape).

    A request is on the hot path (a poll costs ~0.1 ms in Python); in
    multiprocess mode each write to a metric is a locked write to a shared
    file, and a counter plus a histogram took ~25 us a request here. A
    tally is a dict update under a lock. Another process's requests reach a
    scrape within ``flush_every`` seconds.
    """

    def __init__(self, flush_every: float = 1.0) -> None:
        self.flush_every = flush_every
        self._lock = threading.Lock()
        #: (method, route, code) -> [count, sum of seconds, one count per bucket (+Inf last)]
        self._pending: dict[tuple[str, str, str], list[float]] = {}
        self._flusher_pid = 0

    def observe(self, method: str, route: str, code: str, seconds: float) -> None:
        key = (method, route, code)
        bucket = bisect_left(HTTP_BUCKETS, seconds) + 2  # the first bound >= seconds
        with self._lock:
            row = self._pending.get(key)
            if row is None:
                row = self._pending[key] = [0.0] * (len(HTTP_BUCKETS) + 3)
            row[0] += 1
            row[1] += seconds
            row[bucket] += 1
        if self._flusher_pid != os.getpid():  # first request of this process
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        threading.Thread(target=self._run, name="pman-metrics-flush", daemon=True).start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.flush_every)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for (method, route, code), row in pending.items():
            HTTP_REQUESTS.labels(method, route, code).inc(row[0])
            histogram = HTTP_DURATION.labels(method, route)
            # what Histogram.observe does for one value, for many at once
            histogram._sum.inc(row[1])
            for i, n in enumerate(row[2:]):
                if n:
                    histogram._buckets[i].inc(n)


#: the one tally of this process (flushed by render, whichever app scrapes)
REQUESTS = RequestTally()


# ---------------------------------------------------------------- engine calls
class InstrumentedBackend:
    """Times every engine call of a backend and counts its failures.

    A proxy, not a subclass: any other attribute is the wrapped backend's, so
    callers (and tests) see the adapter they built. ``check_name`` is the
    adapter's own bound method (no engine call; it is on the poll path).
    """

    def __init__(self, inner: Backend, resource: str = "default") -> None:
        self.inner = inner
        self.resource = resource
        self.check_name = inner.check_name
        for operation in ENGINE_OPERATIONS:
            setattr(self, operation, self._timed(operation))

    def _timed(self, operation: str) -> Callable[..., Any]:
        backend, resource = self.inner.name, self.resource
        histogram = ENGINE_DURATION.labels(backend, operation, resource)
        inner = self.inner

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                # looked up at each call: the adapter's method as it is now
                return getattr(inner, operation)(*args, **kwargs)
            except BaseException as e:
                kind = type(e).__name__ if isinstance(e, PmanError) else "unexpected"
                ENGINE_ERRORS.labels(backend, operation, kind, resource).inc()
                raise
            finally:
                histogram.observe(time.perf_counter() - started)

        timed.__name__ = operation
        return timed

    def __getattr__(self, attr: str) -> Any:
        # only for what __init__ did not set: the adapter's own attributes
        return getattr(self.__dict__["inner"], attr)

    def __repr__(self) -> str:
        return f"InstrumentedBackend({self.inner!r})"


def instrument(backend: Backend, resource: str | None = None) -> Backend:
    """``backend`` with its engine calls measured (once, however often called),
    labelled with the compute resource it serves (its ``resource``)."""
    if isinstance(backend, InstrumentedBackend):
        return cast("Backend", backend)
    name = resource if resource is not None else getattr(backend, "resource", "default")
    return cast("Backend", InstrumentedBackend(backend, name))


def tracker_cycle(result: str, resource: str = "") -> None:
    TRACKER_CYCLES.labels(result, resource).inc()
    if result == "ok":
        TRACKER_LAST_CYCLE.set(time.time())


def refused(lane: str, code: int) -> None:
    REFUSED.labels(lane, str(code)).inc()


def log_streams(open_now: int) -> None:
    LOG_STREAMS.set(open_now)


def visibility_lag(seconds: float) -> None:
    TRACKER_VISIBILITY_LAG.observe(max(0.0, seconds))


# ---------------------------------------------------------------- scraping
class _Families:
    """What generate_latest needs of a registry: metric families to write."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _process_values() -> list[Metric]:
    """Every process's values in multiprocess mode, else this process's."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return list(registry.collect())
    return list(REGISTRY.collect())


def render(registry: Registry, resources: Mapping[str, str] | str) -> bytes:
    """The exposition text of a scrape: the processes' values, then what the
    job registry says now (one query each) and the tracker's lag.
    ``resources``: each compute resource's backend (a backend name alone: the
    one resource ``default``)."""
    if isinstance(resources, str):
        resources = {"default": resources}
    REQUESTS.flush()
    families = _process_values()
    last_cycle = max(
        (
            s.value
            for f in families
            for s in f.samples
            if s.name == "pman_tracker_last_cycle_timestamp_seconds" and s.value > 0
        ),
        default=None,
    )
    counts = registry.count_by_resource_and_backend()
    jobs = GaugeMetricFamily(
        "pman_jobs",
        "Jobs in the registry (not deleted), by backend, state and compute resource, "
        "at scrape time",
        labels=["backend", "state", "resource"],
    )
    seen = {*((b, r) for r, b in resources.items()), *((b, r) for r, b, _ in counts)}
    for backend, resource in sorted(seen):
        for state in JobState:
            n = counts.get((resource, backend, state.value), 0)
            jobs.add_metric([backend, state.value, resource], n)
    families.append(jobs)
    families.append(
        GaugeMetricFamily(
            "pman_queue_length",
            "Jobs waiting in pman's own queue (PMAN_MAX_RUNNING): recorded, not on the engine "
            'yet, every resource (pman_jobs{state="queued"} has them by resource)',
            value=registry.count_queued(),
        )
    )
    if last_cycle is not None:
        families.append(
            GaugeMetricFamily(
                "pman_tracker_lag_seconds",
                "Seconds since the leading tracker last completed a cycle: how far "
                "behind the engine the registry may be",
                value=max(0.0, time.time() - last_cycle),
            )
        )
    return generate_latest(_Families(families))  # type: ignore[arg-type]
