"""The lanes on an event loop: what pman's two server interfaces share.

``pman serve`` runs granian's RSGI interface (pman.api.rsgi); the ASGI one
(pman.api.asgi) serves the same application for ASGI servers. Both hand
each request here as an :class:`Exchange` (the interface's own way of
reading the request and sending the answer), and :class:`LanedBridge` does
the rest, the same for both. Waiting costs no thread: a request's body is
read on the event loop with a deadline (PMAN_BODY_TIMEOUT, 408 after it), so
slow clients hold nothing; only then is the (WSGI, Flask) application
called, on the thread pool of the request's lane (pman.api.lanes):

- quick requests on PMAN_THREADS threads that nothing else uses (a poll on a
  SQLite registry is answered on the event loop itself: one indexed read of
  a local file costs less than the hand-off to a thread);
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
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pman import metrics
from pman.api.exchange import Disconnected, Exchange, Response, StreamSink
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
from pman.api.wsgicall import complete, start_app
from pman.deadlines import Deadline
from pman.settings import Settings

log = logging.getLogger(__name__)

#: requests that may wait for an engine slot, per slot; more are 503 at once
#: (each holds its body, up to PMAN_MAX_REQUEST_BYTES, while it waits)
ENGINE_WAITERS_PER_SLOT = 4
_API = "/api/v1/"
#: GET /api/v1/<word>/ answers that are more than a read of the registry
_NOT_INLINE = frozenset({"resources"})


class LanedBridge:
    """Lanes, engine slots and deadlines, stream caps: one per process, for
    either interface (the subclasses pman.api.asgi.LanedASGI and
    pman.api.rsgi.LanedRSGI)."""

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

    async def handle(self, exchange: Exchange) -> None:
        """Answer one request."""
        environ = exchange.environ()
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        has_body = _has_body(environ)
        if self.inline_polls and method == "GET" and not has_body and _is_poll(path):
            # most requests: a quick one, answered here (see the module's text)
            environ["wsgi.input"] = io.BytesIO()
            await exchange.respond(*complete(self.app, environ))
            return
        lane = lane_of(method, path)
        if has_body:
            try:
                async with asyncio.timeout(self.body_timeout):
                    body = await self._read_body(exchange, environ)
            except TimeoutError:
                await self._refuse(
                    exchange,
                    lane,
                    408,
                    f"the request body did not arrive within {self.body_timeout:g} s "
                    "(PMAN_BODY_TIMEOUT)",
                    close=True,
                )
                return
            except Disconnected:
                return
            environ["wsgi.input"] = io.BytesIO(body)
        else:
            environ["wsgi.input"] = io.BytesIO()
        if lane is Lane.QUICK:
            response = await asyncio.get_running_loop().run_in_executor(
                self.quick, complete, self.app, environ
            )
            await exchange.respond(*response)
        elif lane is Lane.ENGINE:
            # from the request's arrival in full (its body has a deadline of its own)
            deadline = Deadline(time.monotonic() + self.engine_timeout)
            await self._engine_request(exchange, environ, deadline)
        else:
            await self._stream_request(exchange, environ)

    def startup(self) -> None:
        """The server's worker starts (ASGI lifespan, RSGI init)."""
        self._end_streams_on_shutdown()

    def shutdown(self) -> None:
        """The server's worker stops."""
        for pool in (self.quick, self.engine, self.stream_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ the lanes
    async def _engine_request(
        self, exchange: Exchange, environ: dict[str, Any], deadline: Deadline
    ) -> None:
        if self._engine_slots is None:
            self._engine_slots = asyncio.Semaphore(self.engine_slots_total)
        slots = self._engine_slots
        if slots.locked() and self._engine_waiting >= self.engine_waiters_max:
            await self._refuse(exchange, Lane.ENGINE, 503, engine_busy_message(self.engine_timeout))
            return
        self._engine_waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), max(0.0, deadline.remaining()))
        except TimeoutError:
            await self._refuse(exchange, Lane.ENGINE, 503, engine_busy_message(self.engine_timeout))
            return
        finally:
            self._engine_waiting -= 1
        environ[DEADLINE_KEY] = deadline
        work = asyncio.get_running_loop().run_in_executor(self.engine, complete, self.app, environ)
        # the slot is the thread's: it is free when the thread is, not before
        work.add_done_callback(lambda _: slots.release())
        try:
            response = await asyncio.wait_for(asyncio.shield(work), max(0.0, deadline.remaining()))
        except TimeoutError:
            if deadline.abandon():
                work.add_done_callback(_log_late_failure)
                await self._refuse(
                    exchange,
                    Lane.ENGINE,
                    503,
                    f"the engine did not answer within {self.engine_timeout:g} s "
                    "(PMAN_ENGINE_TIMEOUT); whatever it does for this request later is undone",
                )
                return
            response = await work  # its answer was decided already: it is on its way
        await exchange.respond(*response)

    async def _stream_request(self, exchange: Exchange, environ: dict[str, Any]) -> None:
        client = client_key(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"))
        sid = self.streams.open(client)
        if isinstance(sid, str):
            await self._refuse(exchange, Lane.STREAM, 429, sid)
            return
        metrics.log_streams(self.streams.open_count)
        loop = asyncio.get_running_loop()
        left = threading.Event()
        try:
            pump = loop.run_in_executor(
                self.stream_pool, self._pump, exchange, environ, sid, loop, left
            )
            gone = asyncio.ensure_future(exchange.disconnected())
            done, _ = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            if pump not in done:
                # the client went away: break off the engine's read, then
                # let the pump close what it holds
                left.set()
                self.streams.abort(sid)
                with contextlib.suppress(Exception):
                    await pump
            else:
                gone.cancel()
                with contextlib.suppress(Disconnected):
                    pump.result()
        finally:
            self.streams.close(sid)
            metrics.log_streams(self.streams.open_count)

    def _pump(
        self,
        exchange: Exchange,
        environ: dict[str, Any],
        sid: int,
        loop: asyncio.AbstractEventLoop,
        left: threading.Event,
    ) -> None:
        """On a stream thread: run the application, then pass its body on
        chunk by chunk, each sent before the next is read (a slow client
        slows the engine read, it does not fill pman's memory)."""
        status, headers, body = start_app(self.app, environ)
        sink: StreamSink | None = None
        try:
            self.streams.attach(sid, getattr(environ.get(LOG_STREAM_KEY), "abort", None))
            sink = exchange.open_stream(status, headers, loop, left)
            chunks = iter(body)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except Exception:
                    sink.fail()
                    raise
                if chunk:
                    self.streams.touch(sid)
                    sink.send(chunk)
            sink.end()
        finally:
            try:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            finally:
                if sink is not None:
                    sink.close()

    # ------------------------------------------------------------ plumbing
    async def _read_body(self, exchange: Exchange, environ: dict[str, Any]) -> bytes:
        """The whole body, or its first PMAN_MAX_REQUEST_BYTES + 1 bytes (the
        application answers 413 to those); none when Content-Length alone is
        over the limit (the application refuses it from the header)."""
        length: int | None = None
        with contextlib.suppress(KeyError, ValueError):
            length = int(environ["CONTENT_LENGTH"])
            if length > self.max_body:
                return b""
        parts: list[bytes] = []
        size = 0
        async for data in exchange.body_chunks():
            if data:
                parts.append(data)
                size += len(data)
                if size > self.max_body:
                    return b"".join(parts)[: self.max_body + 1]
        if length is not None and size < length:
            raise Disconnected  # the body ended early: its client is gone
        return b"".join(parts)

    async def _refuse(
        self, exchange: Exchange, lane: Lane, status: int, message: str, close: bool = False
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
        await exchange.respond(status, headers, body)

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


def _has_body(environ: dict[str, Any]) -> bool:
    """Whether the request says it has a body: a Content-Length over 0, or a
    Transfer-Encoding (HTTP/2 needs neither: its requests are read always).
    A request without either has none (RFC 9112, 6.3): nothing to wait for."""
    length = environ.get("CONTENT_LENGTH")
    return (
        (length is not None and length != "0")
        or "HTTP_TRANSFER_ENCODING" in environ
        or not environ["SERVER_PROTOCOL"].startswith("HTTP/1")
    )


def _is_poll(path: str) -> bool:
    """``/api/v1/<jid>/`` (the trailing slash optional), without a regular
    expression (the list, ``/api/v1/jobs/``, too: one query of the registry).
    Not ``/api/v1/resources/``: it may wait for the engines' health checks."""
    if not path.startswith(_API):
        return False
    jid = path[len(_API) :]
    if jid.endswith("/"):
        jid = jid[:-1]
    return bool(jid) and "/" not in jid and jid not in _NOT_INLINE


def _log_late_failure(work: asyncio.Future[Response]) -> None:
    if not work.cancelled() and work.exception() is not None:
        log.error("an engine request answered 503 failed later: %s", work.exception())
