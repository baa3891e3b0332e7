"""Kinds of work kept apart, so that work that may wait never starves work that must not.

Every request falls into one of three lanes by its method and path alone:

- ``QUICK``: answered from the registry or from memory (polls, listing,
  events, health, login, the API's documents, metrics). Never waits behind
  anything but other quick requests.
- ``ENGINE``: may wait on the engine (POST a job, DELETE, cancel). At most
  ``PMAN_MAX_ENGINE_CALLS`` per process run at once; more wait for a turn, and
  every one is answered by ``PMAN_ENGINE_TIMEOUT`` after it arrived (503 then),
  however many are ahead of it.
- ``STREAM``: a job's logs, which last as long as the job may (``follow``).
  At most ``PMAN_MAX_LOG_STREAMS`` per process and
  ``PMAN_MAX_LOG_STREAMS_PER_CLIENT`` per client and process; one more is
  refused at once (429), never queued. A stream that passes no data for
  ``PMAN_LOG_STREAM_IDLE_TIMEOUT`` is ended.

This module is the bookkeeping both server interfaces share (the ASGI one
that ``pman serve`` runs, pman.api.asgi, and the WSGI middleware below for
``gunicorn pman.wsgi:application``); it knows paths and headers, nothing of
Flask or the engines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pman.api.pinning import split_prefix
from pman.deadlines import Deadline
from pman.settings import Settings

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: the environ key of the request's engine deadline (a Deadline)
DEADLINE_KEY = "pman.deadline"
#: the environ key a logs route puts the engine's log stream under, so that
#: the server can end it from another thread (client gone, idle too long)
LOG_STREAM_KEY = "pman.log_stream"
#: seconds a client is told to wait before trying again (Retry-After)
RETRY_AFTER_S = 1


class Lane(Enum):
    QUICK = "quick"
    ENGINE = "engine"
    STREAM = "stream"


def lane_of(method: str, path: str) -> Lane:
    """The lane of a request, from its method and path only (no routing: an
    unknown path is quick, and answered 404 by the application). A path
    pinned to a compute resource (``/<resource>/api/v1/...``) is in the lane
    of its unprefixed path."""
    if not path.startswith("/api/v1/"):
        path = split_prefix(path)[1]
    if not path.startswith("/api/v1/"):
        return Lane.QUICK
    rest = path[len("/api/v1/") :].strip("/")
    parts = rest.split("/") if rest else []
    if method == "POST":
        if not parts:
            return Lane.ENGINE  # submit a job
        if len(parts) == 2 and parts[1] == "cancel":
            return Lane.ENGINE
        return Lane.QUICK  # the login, unknown paths
    if method == "DELETE" and len(parts) == 1:
        return Lane.ENGINE
    if method == "GET" and len(parts) == 2 and parts[1] == "logs":
        return Lane.STREAM
    return Lane.QUICK


def client_key(authorization: str | None, address: str | None) -> str:
    """Who a stream is counted against: the bearer token (as a digest: the
    token itself is never kept), or the client's address without one."""
    if authorization:
        return "token:" + hashlib.sha256(authorization.encode()).hexdigest()[:16]
    return f"address:{address or 'unknown'}"


@dataclass
class _Stream:
    client: str
    last_data: float
    abort: Callable[[], None] | None = None
    ended_idle: bool = False
    #: ended before its engine side was attached: end that too, once it is
    aborted: bool = False


@dataclass
class StreamLimiter:
    """The log streams open in this process: counted per client, and ended by
    a watchdog thread when idle for too long. Thread-safe; its methods never
    block (the ASGI server calls them on its event loop)."""

    max_streams: int
    max_per_client: int
    idle_timeout: float
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _per_client: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 0
    _watchdog: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamLimiter:
        return cls(
            settings.server.max_log_streams,
            settings.server.max_log_streams_per_client,
            settings.server.log_stream_idle_timeout,
        )

    def open(self, client: str) -> int | str:
        """A stream id, or the reason it is refused (a message for the 429)."""
        with self._lock:
            if len(self._streams) >= self.max_streams:
                return (
                    f"this pman process serves {self.max_streams} log streams already "
                    "(PMAN_MAX_LOG_STREAMS); try again later"
                )
            if self._per_client.get(client, 0) >= self.max_per_client:
                return (
                    f"this client has {self.max_per_client} log streams open already "
                    "(PMAN_MAX_LOG_STREAMS_PER_CLIENT); close one first"
                )
            self._next_id += 1
            sid = self._next_id
            self._streams[sid] = _Stream(client, time.monotonic())
            self._per_client[client] = self._per_client.get(client, 0) + 1
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="pman-stream-watchdog", daemon=True
                )
                self._watchdog.start()
            return sid

    def attach(self, sid: int, abort: Callable[[], None] | None) -> None:
        """What ends the stream's engine side (the log stream's ``abort``)."""
        with self._lock:
            stream = self._streams.get(sid)
            if stream is None:
                return
            stream.abort = abort
            too_late = stream.aborted
        if too_late and abort is not None:
            _call_abort(abort)

    def touch(self, sid: int) -> None:
        stream = self._streams.get(sid)
        if stream is not None:
            stream.last_data = time.monotonic()

    def close(self, sid: int) -> None:
        with self._lock:
            stream = self._streams.pop(sid, None)
            if stream is None:
                return
            left = self._per_client[stream.client] - 1
            if left:
                self._per_client[stream.client] = left
            else:
                del self._per_client[stream.client]

    def abort(self, sid: int) -> None:
        """End the stream's engine side now (its client went away), or as soon
        as it is attached."""
        with self._lock:
            stream = self._streams.get(sid)
            if stream is not None:
                stream.aborted = True
            abort = stream.abort if stream is not None else None
        if abort is not None:
            _call_abort(abort)

    def abort_all(self) -> None:
        """End every stream's engine side (the server is shutting down: it
        waits for open responses, and a silent job's would never end)."""
        with self._lock:
            aborts = [s.abort for s in self._streams.values() if s.abort is not None]
        for abort in aborts:
            _call_abort(abort)

    @property
    def open_count(self) -> int:
        return len(self._streams)

    def _watch(self) -> None:
        period = min(1.0, self.idle_timeout / 4)
        while True:
            time.sleep(period)
            cutoff = time.monotonic() - self.idle_timeout
            with self._lock:
                idle = [
                    s for s in self._streams.values() if s.last_data < cutoff and not s.ended_idle
                ]
                for s in idle:
                    s.ended_idle = True
            for s in idle:
                log.info(
                    "a log stream passed no data for %g s (PMAN_LOG_STREAM_IDLE_TIMEOUT): ended",
                    self.idle_timeout,
                )
                if s.abort is not None:
                    _call_abort(s.abort)


def _call_abort(abort: Callable[[], None]) -> None:
    try:
        abort()
    except Exception:  # ending a stream must never fail the caller
        log.exception("could not end a log stream")


def json_error(status: int, message: str) -> bytes:
    return json.dumps({"message": message}).encode() + b"\n"


_REASONS = {
    408: "408 Request Timeout",
    429: "429 Too Many Requests",
    503: "503 Service Unavailable",
}


class LaneMiddleware:
    """The lanes under a WSGI server (``gunicorn pman.wsgi:application``).

    Engine requests take turns on ``PMAN_MAX_ENGINE_CALLS`` slots and are
    answered by their deadline; log streams are capped and ended when idle.
    What WSGI cannot give: a request holds one of the server's threads from
    its first byte to its last (a slow body included), so the server's thread
    count must exceed PMAN_MAX_ENGINE_CALLS + PMAN_MAX_LOG_STREAMS for quick
    requests to always find one (README, "Serving under gunicorn").
    """

    def __init__(self, app: WSGIApp, settings: Settings) -> None:
        self.app = app
        self.engine_timeout = settings.core.engine_timeout
        self.engine_slots = threading.BoundedSemaphore(settings.server.max_engine_calls)
        self.streams = StreamLimiter.from_settings(settings)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        lane = lane_of(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""))
        if lane is Lane.ENGINE:
            return self._engine(environ, start_response)
        if lane is Lane.STREAM:
            return self._stream(environ, start_response)
        return self.app(environ, start_response)

    def _engine(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        deadline = Deadline(time.monotonic() + self.engine_timeout)
        if not self.engine_slots.acquire(timeout=self.engine_timeout):
            return _refuse(start_response, 503, engine_busy_message(self.engine_timeout))
        try:
            environ[DEADLINE_KEY] = deadline
            # the body is small: the response is made in full here, and the
            # slot freed with it
            body = self.app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        finally:
            self.engine_slots.release()

    def _stream(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        client = client_key(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"))
        sid = self.streams.open(client)
        if isinstance(sid, str):
            return _refuse(start_response, 429, sid)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.streams.close(sid)
            raise
        self.streams.attach(sid, getattr(environ.get(LOG_STREAM_KEY), "abort", None))
        return _Counted(body, self.streams, sid)


def engine_busy_message(timeout: float) -> str:
    return (
        f"pman could not start on this request within {timeout:g} s (PMAN_ENGINE_TIMEOUT): "
        "every engine slot of this process is busy (PMAN_MAX_ENGINE_CALLS); the engine may "
        "be slow or stalled. Nothing was done: try again"
    )


def _refuse(start_response: Callable[..., Any], status: int, message: str) -> list[bytes]:
    body = json_error(status, message)
    start_response(
        _REASONS[status],
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(RETRY_AFTER_S)),
        ],
    )
    return [body]


class _Counted:
    """A WSGI body that keeps its stream counted until the server closes it."""

    def __init__(self, body: Iterable[bytes], streams: StreamLimiter, sid: int) -> None:
        self.body = body
        self.streams = streams
        self.sid = sid

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.streams.touch(self.sid)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.streams.close(self.sid)
