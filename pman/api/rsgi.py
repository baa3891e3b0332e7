"""pman's RSGI interface: what ``pman serve`` runs (``pman.rsgi:application``).

RSGI is granian's own interface: a request is an object with attributes,
its answer one call (``response_bytes``), where ASGI builds and parses a
dictionary per message and awaits two sends. A poll costs markedly less
here (README, "Benchmark"). The lanes, deadlines and stream caps are
pman.api.bridge's, as for the ASGI interface (pman.api.asgi); this module is
the RSGI side of them, with two things RSGI does not do itself:

- a log stream's transport queues without bound (``send_bytes`` never
  waits): its thread waits on the client's TCP acknowledgements instead
  (pman.api.pacing), so a slow client still holds the engine read back;
- a stream that ends with an exception still gets its final chunk: one that
  cannot be completed has its connection shut down instead, so its client
  sees it incomplete.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from pman.api.bridge import LanedBridge
from pman.api.exchange import Disconnected, Exchange, Headers, StreamSink
from pman.api.pacing import Pacer, find_pacer

#: request header names as environ keys, computed once each (at most this
#: many kept: clients choose names)
_CACHE_MAX = 512
_request_keys: dict[str, str] = {}


class LanedRSGI(LanedBridge):
    """The RSGI application: ``LanedRSGI(wsgi_app, settings)``."""

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto == "http":
            await self.handle(_RSGIExchange(scope, protocol))
        # no websockets here: granian closes them

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.startup()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.shutdown()


class _RSGIExchange(Exchange):
    __slots__ = ("protocol", "scope")

    def __init__(self, scope: Any, protocol: Any) -> None:
        self.scope = scope
        self.protocol = protocol

    def environ(self) -> dict[str, Any]:
        scope = self.scope
        server_name, _, server_port = scope.server.rpartition(":")
        remote_addr, _, remote_port = scope.client.rpartition(":")
        path = scope.path
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            # PEP 3333: the decoded path's bytes, as latin-1
            "PATH_INFO": path if path.isascii() else path.encode().decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server_name.strip("[]"),
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": "HTTP/" + scope.http_version,
            "REMOTE_ADDR": remote_addr.strip("[]"),
            "REMOTE_PORT": remote_port,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        headers = scope.headers
        names = 0
        for name, value in headers.items():
            key = _request_keys.get(name) or _request_key(name)
            if key in environ:
                environ[key] = f"{environ[key]},{value}"
            else:
                environ[key] = value
                names += 1
        if names < len(headers):
            # a header whose every value has bytes other than visible ASCII:
            # granian gives it as empty (as its WSGI interface, pman 4.0.0's, did)
            for name in headers:
                environ.setdefault(_request_keys.get(name) or _request_key(name), "")
        if "HTTP_HOST" not in environ:  # HTTP/2 has an authority instead
            environ["HTTP_HOST"] = scope.authority or ""
        return environ

    async def body_chunks(self) -> AsyncIterator[bytes]:
        # a body cut off by its client's going just ends here: the bridge
        # compares it with its Content-Length
        async for chunk in self.protocol:
            yield chunk

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self.protocol.response_bytes(status, headers, body)

    def open_stream(
        self,
        status: int,
        headers: Headers,
        loop: asyncio.AbstractEventLoop,
        gone: threading.Event,
    ) -> StreamSink:
        pacer = find_pacer(self.scope.server, self.scope.client)
        # the status and headers go out at once, before any of the body
        transport = asyncio.run_coroutine_threadsafe(
            _start_stream(self.protocol, status, headers), loop
        ).result()
        return _RSGISink(transport, loop, pacer, gone)

    async def disconnected(self) -> None:
        await self.protocol.client_disconnect()


class _RSGISink(StreamSink):
    def __init__(
        self,
        transport: Any,
        loop: asyncio.AbstractEventLoop,
        pacer: Pacer | None,
        gone: threading.Event,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._pacer = pacer
        self._gone = gone

    def send(self, chunk: bytes) -> None:
        if self._pacer is not None and not self._pacer.wait(len(chunk), self._gone):
            raise Disconnected
        try:
            asyncio.run_coroutine_threadsafe(_send(self._transport, chunk), self._loop).result()
        except Exception as exc:  # granian's transport is closed: its client is gone
            raise Disconnected from exc

    def end(self) -> None:
        pass  # the response ends once its transport is let go (after __rsgi__ returns)

    def fail(self) -> None:
        if self._pacer is not None:
            self._pacer.break_off()

    def close(self) -> None:
        if self._pacer is not None:
            self._pacer.close()


async def _start_stream(protocol: Any, status: int, headers: Headers) -> Any:
    return protocol.response_stream(status, headers)


async def _send(transport: Any, chunk: bytes) -> None:
    await transport.send_bytes(chunk)


def _request_key(name: str) -> str:
    upper = name.upper().replace("-", "_")
    key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
    if len(_request_keys) < _CACHE_MAX:
        _request_keys[name] = key
    return key
