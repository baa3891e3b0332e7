"""pman's ASGI interface: ``pman.asgi:application`` for an ASGI server.

``pman serve`` uses granian's RSGI interface instead (pman.api.rsgi, less
work per request); both share the lanes, deadlines and stream caps of
pman.api.bridge, and this module is only the ASGI side of them: the scope
as a WSGI environ, the body from ``receive``, the answer through ``send``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pman.api.bridge import LanedBridge
from pman.api.exchange import Disconnected, Exchange, Headers, StreamSink

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: request header names as environ keys, and response header names as ASGI
#: wants them, computed once each (at most this many kept: clients choose names)
_CACHE_MAX = 512
_request_keys: dict[bytes, str] = {}
_response_names: dict[str, bytes] = {}


class LanedASGI(LanedBridge):
    """The ASGI application: ``LanedASGI(wsgi_app, settings)``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(_ASGIExchange(scope, receive, send))
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # no websockets here

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


class _ASGIExchange(Exchange):
    __slots__ = ("receive", "scope", "send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send

    def environ(self) -> dict[str, Any]:
        scope = self.scope
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client") or ("", 0)
        path = scope["path"]
        root = scope.get("root_path", "")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            # PEP 3333: the decoded path's bytes, as latin-1
            "SCRIPT_NAME": root if root.isascii() else root.encode().decode("latin-1"),
            "PATH_INFO": path if path.isascii() else path.encode().decode("latin-1"),
            "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": str(client[0]),
            "REMOTE_PORT": str(client[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for raw_name, raw_value in scope.get("headers", ()):
            key = _request_keys.get(raw_name) or _request_key(raw_name)
            value = raw_value.decode("latin-1")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        await self.send(
            {"type": "http.response.start", "status": status, "headers": _encode(headers)}
        )
        await self.send({"type": "http.response.body", "body": body})

    def open_stream(
        self,
        status: int,
        headers: Headers,
        loop: asyncio.AbstractEventLoop,
        gone: threading.Event,
    ) -> StreamSink:
        sink = _ASGISink(self.send, loop)
        sink.push({"type": "http.response.start", "status": status, "headers": _encode(headers)})
        # granian sends the status line with the first body message: a
        # client of a silent job must not wait for the job's first line
        sink.push({"type": "http.response.body", "body": b"", "more_body": True})
        return sink

    async def disconnected(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass


class _ASGISink(StreamSink):
    """Each message sent on the loop's thread (the server's own send may not
    be called from another); granian's send waits while its buffer for the
    response is full, so a slow client holds the stream's thread back."""

    def __init__(self, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self._send = send
        self._loop = loop

    def push(self, message: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(_sent(self._send, message), self._loop).result()

    def send(self, chunk: bytes) -> None:
        self.push({"type": "http.response.body", "body": chunk, "more_body": True})

    def end(self) -> None:
        self.push({"type": "http.response.body", "body": b"", "more_body": False})

    def fail(self) -> None:
        # nothing to send: the application's exception reaches the server,
        # which closes the connection without the response's final chunk
        pass


async def _sent(send: Send, message: dict[str, Any]) -> None:
    await send(message)


def _request_key(raw_name: bytes) -> str:
    name = raw_name.decode("latin-1").upper().replace("-", "_")
    key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name
    if len(_request_keys) < _CACHE_MAX:
        _request_keys[raw_name] = key
    return key


def _encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    encoded = []
    for name, value in headers:
        raw = _response_names.get(name)
        if raw is None:
            raw = name.lower().encode("latin-1")
            if len(_response_names) < _CACHE_MAX:
                _response_names[name] = raw
        encoded.append((raw, value.encode("latin-1")))
    return encoded
