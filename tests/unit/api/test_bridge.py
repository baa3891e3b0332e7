"""The lanes on an event loop (pman.api.bridge), whatever the server interface:
driven here through a fake Exchange; the ASGI and RSGI sides have their own
tests (test_interfaces.py), and both are served for real in
tests/integration/test_availability.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pman.api.bridge import LanedBridge, _is_poll
from pman.api.exchange import Exchange, Headers, StreamSink
from pman.settings import Settings
from tests.unit.conftest import make_settings


class RecordingSink(StreamSink):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def send(self, chunk: bytes) -> None:
        self.events.append(chunk)

    def end(self) -> None:
        self.events.append("end")

    def fail(self) -> None:
        self.events.append("fail")

    def close(self) -> None:
        self.events.append("close")


class FakeExchange(Exchange):
    """A request as an interface would give it; what was sent back is kept."""

    def __init__(
        self,
        method: str = "GET",
        path: str = "/api/v1/",
        headers: dict[str, str] | None = None,
        parts: tuple[bytes, ...] = (),
        delay: float = 0.0,
        protocol: str = "HTTP/1.1",
    ) -> None:
        self.method, self.path, self.protocol = method, path, protocol
        self.headers = headers or {}
        self.parts, self.delay = parts, delay
        self.body_read = False
        self.responses: list[tuple[int, dict[str, str], bytes]] = []
        self.stream: tuple[int, RecordingSink] | None = None
        self.gone = asyncio.Event()

    def environ(self) -> dict[str, Any]:
        return {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": self.protocol,
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "5555",
            "wsgi.url_scheme": "http",
            **self.headers,
        }

    async def body_chunks(self) -> AsyncIterator[bytes]:
        self.body_read = True
        for part in self.parts:
            await asyncio.sleep(self.delay)
            yield part

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        self.responses.append((status, dict(headers), body))

    def open_stream(
        self,
        status: int,
        headers: Headers,
        loop: asyncio.AbstractEventLoop,
        gone: threading.Event,
    ) -> StreamSink:
        sink = RecordingSink()
        self.stream = (status, sink)
        return sink

    async def disconnected(self) -> None:
        await self.gone.wait()


class EchoApp:
    """A WSGI application that answers with the body it read (and remembers it)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"].read()
        self.bodies.append(body)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def settings(storebase: Path, tmp_path: Path) -> Settings:
    return make_settings(storebase, tmp_path, PMAN_BODY_TIMEOUT="0.3")


def answer(bridge: LanedBridge, exchange: FakeExchange) -> FakeExchange:
    asyncio.run(bridge.handle(exchange))
    return exchange


@pytest.mark.parametrize(
    ("method", "headers", "protocol", "read"),
    [
        ("GET", {}, "HTTP/1.1", False),
        ("POST", {}, "HTTP/1.1", False),
        ("DELETE", {"CONTENT_LENGTH": "0"}, "HTTP/1.1", False),
        ("GET", {}, "HTTP/1", False),
        ("POST", {"CONTENT_LENGTH": "5"}, "HTTP/1.1", True),
        ("POST", {"HTTP_TRANSFER_ENCODING": "chunked"}, "HTTP/1.1", True),
        # HTTP/2 needs neither header for a body: always read
        ("GET", {}, "HTTP/2", True),
    ],
)
def test_a_body_is_read_only_when_the_request_says_it_has_one(
    settings: Settings, method: str, headers: dict[str, str], protocol: str, read: bool
) -> None:
    app = EchoApp()
    bridge = LanedBridge(app, settings)
    parts = (b"hello",) if read else ()
    done = answer(bridge, FakeExchange(method, "/", headers, parts, protocol=protocol))
    assert done.body_read is read
    assert app.bodies == [b"hello" if read else b""]
    assert done.responses[0][0] == 200


def test_a_poll_is_answered_without_its_body_or_a_thread(settings: Settings) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(threading.current_thread().name)
        start_response("200 OK", [])
        return [b"{}"]

    bridge = LanedBridge(app, settings)
    answer(bridge, FakeExchange("GET", "/api/v1/some-job/"))
    answer(bridge, FakeExchange("GET", "/api/v1/job-1/events/"))  # a quick thread
    assert seen[0] == threading.current_thread().name
    assert seen[1].startswith("pman-quick")


@pytest.mark.parametrize(
    ("path", "poll"),
    [
        ("/api/v1/job-1/", True),
        ("/api/v1/job-1", True),
        ("/api/v1/", False),
        ("/api/v1//", False),
        ("/api/v1/job-1/logs/", False),
        ("/api/v1/job-1//", False),
        ("/health", False),
        ("/api/v10/job/", False),
        ("/api/v1/jobs/", True),  # the list: one query of the registry too
        ("/api/v1/resources/", False),  # may wait for the engines' health checks
        ("/hpc/api/v1/job-1/", False),  # pinned: through the quick lane's threads
    ],
)
def test_what_a_poll_is(path: str, poll: bool) -> None:
    assert _is_poll(path) is poll


def test_a_body_that_ends_before_its_length_is_a_client_gone(settings: Settings) -> None:
    app = EchoApp()
    done = answer(
        LanedBridge(app, settings),
        FakeExchange("POST", "/api/v1/", {"CONTENT_LENGTH": "100"}, (b"only this",)),
    )
    assert done.responses == [] and app.bodies == []


def test_a_body_over_the_limit_by_its_length_is_not_read(settings: Settings) -> None:
    app = EchoApp()
    too_long = str(settings.server.max_request_bytes + 1)
    done = answer(
        LanedBridge(app, settings),
        FakeExchange("POST", "/api/v1/", {"CONTENT_LENGTH": too_long}, (b"x",)),
    )
    assert not done.body_read and app.bodies == [b""]  # the application refuses it


def test_a_body_that_does_not_arrive_in_time_is_answered_408(settings: Settings) -> None:
    app = EchoApp()
    done = answer(
        LanedBridge(app, settings),
        FakeExchange("POST", "/api/v1/", {"CONTENT_LENGTH": "2"}, (b"a", b"b"), delay=0.25),
    )
    [(status, headers, body)] = done.responses
    assert status == 408 and headers["Connection"] == "close"
    assert b"PMAN_BODY_TIMEOUT" in body and app.bodies == []


def _logs(chunks: Iterator[bytes]) -> Callable[..., Iterator[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return chunks

    return app


def test_a_stream_is_passed_on_chunk_by_chunk_then_ended(settings: Settings) -> None:
    done = answer(
        LanedBridge(_logs(iter([b"one\n", b"", b"two\n"])), settings),
        FakeExchange("GET", "/api/v1/job-1/logs/"),
    )
    assert done.stream is not None
    status, sink = done.stream
    assert status == 200
    assert sink.events == [b"one\n", b"two\n", "end", "close"]


def test_a_stream_that_fails_half_way_is_not_ended_but_failed(settings: Settings) -> None:
    def failing() -> Iterator[bytes]:
        yield b"one\n"
        raise OSError("the engine went away")

    exchange = FakeExchange("GET", "/api/v1/job-1/logs/")
    with pytest.raises(OSError, match="the engine went away"):
        answer(LanedBridge(_logs(failing()), settings), exchange)
    assert exchange.stream is not None
    assert exchange.stream[1].events == [b"one\n", "fail", "close"]


def test_streams_over_the_cap_are_refused_at_once(storebase: Path, tmp_path: Path) -> None:
    settings = make_settings(storebase, tmp_path, PMAN_MAX_LOG_STREAMS="0")
    done = answer(
        LanedBridge(_logs(iter([b"x"])), settings), FakeExchange("GET", "/api/v1/job-1/logs/")
    )
    [(status, headers, _)] = done.responses
    assert status == 429 and headers["Retry-After"] == "1" and done.stream is None
