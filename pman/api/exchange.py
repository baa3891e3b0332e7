"""One HTTP request as a server interface gives it, and its answer.

pman.api.bridge answers requests the same way whichever interface the
server speaks; pman.api.asgi and pman.api.rsgi each give it their requests
as an :class:`Exchange`, and a log stream's body goes through a
:class:`StreamSink`.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

Headers = list[tuple[str, str]]
Response = tuple[int, Headers, bytes]


class Disconnected(Exception):
    """The client went away (before its request was read, or while its
    stream was being sent)."""


class StreamSink(ABC):
    """Where a log stream's chunks go: used from the stream's own thread."""

    @abstractmethod
    def send(self, chunk: bytes) -> None:
        """Pass a chunk on; returns when the next one may be read (so a slow
        client slows the engine read, and fills no memory of pman's). Raises
        when the client is gone."""

    @abstractmethod
    def end(self) -> None:
        """The response is complete."""

    @abstractmethod
    def fail(self) -> None:
        """The response cannot be completed (the engine failed half-way): the
        client must see it incomplete, not ended."""

    def close(self) -> None:  # noqa: B027 (most sinks hold nothing)
        """Let go of what the sink holds (whether the stream ended or not)."""


class Exchange(ABC):
    """One HTTP request as a server interface gives it, and its answer."""

    __slots__ = ()

    @abstractmethod
    def environ(self) -> dict[str, Any]:
        """The request's WSGI environ (PEP 3333) but for ``wsgi.input``."""

    @abstractmethod
    def body_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises Disconnected if the client leaves."""

    @abstractmethod
    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Send a whole response."""

    @abstractmethod
    def open_stream(
        self,
        status: int,
        headers: Headers,
        loop: asyncio.AbstractEventLoop,
        gone: threading.Event,
    ) -> StreamSink:
        """From a stream's thread: send the status and headers now (a client of
        a silent job must not wait for its first line), and return where the
        body goes. ``gone`` is set once the client is known to have left."""

    @abstractmethod
    async def disconnected(self) -> None:
        """Returns when the client has gone (once the body was read)."""
