"""pman's server interface: ASGI, with each lane's work on threads of its own.

``pman serve`` runs this under granian's ASGI interface. Waiting costs no
thread here: a request's body is read on the event loop with a deadline
(PMAN_BODY_TIMEOUT, 408 after it), so slow clients hold nothing; only then is
the (WSGI, Flask) application called, on the thread pool of the request's
lane (pman.api.lanes):

- quick requests on PMAN_THREADS threads that nothing else uses;
- engine requests on PMAN_MAX_ENGINE_CALLS threads, taking turns, each
  answered by PMAN_ENGINE_TIMEOUT after it arrived: when the engine has not
  answered by then, the client gets a 503 and whatever the engine does later
  for it is undone (pman.deadlines.Deadline);
- log streams on a thread each, up to the caps, refused at once beyond them
  (429); a stream whose client goes away, or that passes no data for
  PMAN_LOG_STREAM_IDLE_TIMEOUT, has its engine read broken off at once.

A stalled engine therefore holds at most the engine lane's threads, open
streams at most the stream lane's, and polls keep their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pman import metrics
from pman.api.lanes import (
    DEADLINE_KEY,
    LOG_STREAM_KEY,
    RETRY_AFTER_S,
    Lane,
    StreamLimiter,
    WSGIApp,
    client_key,
    engine_busy_message,
    json_error,
    lane_of,
)
from pman.deadlines import Deadline
from pman.settings import Settings

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Response = tuple[int, list[tuple[str, str]], bytes]

#: requests that may wait for an engine slot, per slot; more are 503 at once
#: (each holds its body, up to PMAN_MAX_REQUEST_BYTES, while it waits)
ENGINE_WAITERS_PER_SLOT = 4
_POLL = re.compile(r"/api/v1/[^/]+/?")


class _Disconnected(Exception):
    """The client went away before its request was read."""


class LanedASGI:
    """The ASGI application: ``LanedASGI(wsgi_app, settings)``."""

    def __init__(self, app: WSGIApp, settings: Settings) -> None:
        self.app = app
        self.body_timeout = settings.server.body_timeout
        self.max_body = settings.server.max_request_bytes
        self.engine_timeout = settings.core.engine_timeout
        self.quick = ThreadPoolExecutor(
            settings.server.quick_threads, thread_name_prefix="pman-quick"
        )
        self.engine = ThreadPoolExecutor(
            settings.server.max_engine_calls, thread_name_prefix="pman-engine"
        )
        self.engine_slots_total = settings.server.max_engine_calls
        self.engine_waiters_max = settings.server.max_engine_calls * ENGINE_WAITERS_PER_SLOT
        self.stream_pool = ThreadPoolExecutor(
            max(1, settings.server.max_log_streams), thread_name_prefix="pman-stream"
        )
        self.streams = StreamLimiter.from_settings(settings)
        self.inline_polls = (
            settings.registry.database_url.startswith("sqlite")
            or not settings.registry.database_url
        )
        # made on first use, in the server's event loop
        self._engine_slots: asyncio.Semaphore | None = None
        self._engine_waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here
        lane = lane_of(scope["method"], scope["path"])
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._read_body(scope, receive)
        except TimeoutError:
            await _send_error(
                send,
                lane,
                408,
                f"the request body did not arrive within {self.body_timeout:g} s "
                "(PMAN_BODY_TIMEOUT)",
                close=True,
            )
            return
        except _Disconnected:
            return
        environ = _environ(scope, body)
        if lane is Lane.QUICK:
            if self.inline_polls and scope["method"] == "GET" and _POLL.fullmatch(scope["path"]):
                response = _complete(self.app, environ)
            else:
                response = await asyncio.get_running_loop().run_in_executor(
                    self.quick, _complete, self.app, environ
                )
            await _send_response(send, response)
        elif lane is Lane.ENGINE:
            # from the request's arrival in full (its body has a deadline of its own)
            deadline = Deadline(time.monotonic() + self.engine_timeout)
            await self._engine_request(environ, send, deadline)
        else:
            await self._stream_request(scope, environ, receive, send)

    # ------------------------------------------------------------ the lanes
    async def _engine_request(
        self, environ: dict[str, Any], send: Send, deadline: Deadline
    ) -> None:
        if self._engine_slots is None:
            self._engine_slots = asyncio.Semaphore(self.engine_slots_total)
        slots = self._engine_slots
        if slots.locked() and self._engine_waiting >= self.engine_waiters_max:
            await _send_error(send, Lane.ENGINE, 503, engine_busy_message(self.engine_timeout))
            return
        self._engine_waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), max(0.0, deadline.remaining()))
        except TimeoutError:
            await _send_error(send, Lane.ENGINE, 503, engine_busy_message(self.engine_timeout))
            return
        finally:
            self._engine_waiting -= 1
        environ[DEADLINE_KEY] = deadline
        work = asyncio.get_running_loop().run_in_executor(self.engine, _complete, self.app, environ)
        # the slot is the thread's: it is free when the thread is, not before
        work.add_done_callback(lambda _: slots.release())
        try:
            response = await asyncio.wait_for(asyncio.shield(work), max(0.0, deadline.remaining()))
        except TimeoutError:
            if deadline.abandon():
                work.add_done_callback(_log_late_failure)
                await _send_error(
                    send,
                    Lane.ENGINE,
                    503,
                    f"the engine did not answer within {self.engine_timeout:g} s "
                    "(PMAN_ENGINE_TIMEOUT); whatever it does for this request later is undone",
                )
                return
            response = await work  # its answer was decided already: it is on its way
        await _send_response(send, response)

    async def _stream_request(
        self, scope: Scope, environ: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        client = client_key(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"))
        sid = self.streams.open(client)
        if isinstance(sid, str):
            await _send_error(send, Lane.STREAM, 429, sid)
            return
        metrics.log_streams(self.streams.open_count)
        loop = asyncio.get_running_loop()
        try:
            pump = loop.run_in_executor(self.stream_pool, self._pump, environ, sid, send, loop)
            gone = asyncio.ensure_future(_disconnected(receive))
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                # the client went away: break off the engine's read, then
                # let the pump close what it holds
                self.streams.abort(sid)
                with contextlib.suppress(Exception):
                    await pump
            else:
                gone.cancel()
                pump.result()
        finally:
            self.streams.close(sid)
            metrics.log_streams(self.streams.open_count)

    def _pump(
        self, environ: dict[str, Any], sid: int, send: Send, loop: asyncio.AbstractEventLoop
    ) -> None:
        """On a stream thread: run the application, then pass its body on
        chunk by chunk, each sent before the next is read (a slow client
        slows the engine read, it does not fill pman's memory)."""
        status, headers, body = _start(self.app, environ)
        self.streams.attach(sid, getattr(environ.get(LOG_STREAM_KEY), "abort", None))

        def push(message: dict[str, Any]) -> None:
            # send is called on the loop's thread (the server's own send may
            # not be called from another)
            asyncio.run_coroutine_threadsafe(_sent(send, message), loop).result()

        try:
            push(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": _encode_headers(headers),
                }
            )
            # granian sends the status line with the first body message: a
            # client of a silent job must not wait for the job's first line
            push({"type": "http.response.body", "body": b"", "more_body": True})
            for chunk in body:
                if chunk:
                    self.streams.touch(sid)
                    push({"type": "http.response.body", "body": chunk, "more_body": True})
            push({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    # ------------------------------------------------------------ plumbing
    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, or its first PMAN_MAX_REQUEST_BYTES + 1 bytes (the
        application answers 413 to those); none when Content-Length alone is
        over the limit (the application refuses it from the header)."""
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                with contextlib.suppress(ValueError):
                    if int(value) > self.max_body:
                        return b""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            data = message.get("body", b"")
            if data:
                parts.append(data)
                size += len(data)
                if size > self.max_body:
                    return b"".join(parts)[: self.max_body + 1]
            if not message.get("more_body", False):
                return b"".join(parts)

    def _end_streams_on_shutdown(self) -> None:
        """On SIGTERM or SIGINT, end the open log streams: the server waits for
        every open response before it stops, and a silent job's might never end.

        The server's own handlers stay: this one runs beside them (Python-level
        handlers do not replace the event loop's wake-up on a signal, through
        which the server learns of it)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)

            def on_signal(sig: int, frame: Any, previous: Any = previous) -> None:
                # not here: the handler may interrupt a holder of the streams' lock
                threading.Thread(target=self.streams.abort_all, daemon=True).start()
                if callable(previous):
                    previous(sig, frame)

            signal.signal(signum, on_signal)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._end_streams_on_shutdown()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for pool in (self.quick, self.engine, self.stream_pool):
                    pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The WSGI environ of an ASGI request (PEP 3333), with its body read."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode().decode("latin-1"),
        # PEP 3333: the decoded path's bytes, as latin-1
        "PATH_INFO": scope["path"].encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            key = "CONTENT_TYPE"
        elif name == "CONTENT_LENGTH":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _start(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], Any]:
    """Call the application: its status, headers and (unread) body."""
    started: dict[str, Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = headers

        def write(_data: bytes) -> None:
            raise NotImplementedError("pman's application does not use write()")

        return write

    body = app(environ, start_response)
    if not started:  # a generator that calls start_response when iterated
        body = _Prefetched(body)
    return started["status"], started["headers"], body


class _Prefetched:
    """A WSGI body whose first chunk was read to get its status."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self.body = body
        self.iterator = iter(body)
        self.first = next(self.iterator, b"")

    def __iter__(self) -> Any:
        yield self.first
        yield from self.iterator

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def _complete(app: WSGIApp, environ: dict[str, Any]) -> Response:
    """Call the application and read its (small, bounded) body in full."""
    status, headers, body = _start(app, environ)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return status, headers, data


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def _send_response(send: Send, response: Response) -> None:
    status, headers, data = response
    await send(
        {"type": "http.response.start", "status": status, "headers": _encode_headers(headers)}
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _send_error(
    send: Send, lane: Lane, status: int, message: str, close: bool = False
) -> None:
    """A refusal made before the application saw the request: JSON like the
    application's own errors, with a request id and Retry-After."""
    metrics.refused(lane.value, status)
    body = json_error(status, message)
    request_id = uuid.uuid4().hex
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Request-ID", request_id),
    ]
    if status in (429, 503):
        headers.append(("Retry-After", str(RETRY_AFTER_S)))
    if close:
        headers.append(("Connection", "close"))
    log.warning("refused a request with %d: %s [request_id=%s]", status, message, request_id)
    await _send_response(send, (status, headers, body))


async def _sent(send: Send, message: dict[str, Any]) -> None:
    await send(message)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _log_late_failure(work: asyncio.Future[Response]) -> None:
    if not work.cancelled() and work.exception() is not None:
        log.error("an engine request answered 503 failed later: %s", work.exception())
