"""The ASGI and RSGI sides of the server (pman.api.asgi, pman.api.rsgi): the
same request makes the same WSGI environ through either, and an RSGI log
stream is paced on its client's TCP acknowledgements (pman.api.pacing)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pman.api import pacing
from pman.api.asgi import _ASGIExchange
from pman.api.pacing import Pacer
from pman.api.rsgi import _RSGIExchange


class RSGIHeaders:
    """granian's RSGIHeaders as far as pman uses it: ``items`` leaves out a
    value that is not visible ASCII, ``len`` and iteration count names."""

    def __init__(self, pairs: list[tuple[str, bytes]]) -> None:
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return [(k, v.decode()) for k, v in self.pairs if all(32 <= b < 127 for b in v)]

    def _names(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self.pairs))

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _rsgi(path: str, headers: list[tuple[str, bytes]], **scope: Any) -> dict[str, Any]:
    fields = {
        "proto": "http",
        "http_version": "1.1",
        "server": "127.0.0.1:8000",
        "client": "10.0.0.7:51234",
        "scheme": "http",
        "method": "POST",
        "path": path,
        "query_string": "limit=5&status=started",
        "authority": None,
        "headers": RSGIHeaders(headers),
        **scope,
    }
    return _RSGIExchange(SimpleNamespace(**fields), None).environ()


def _asgi(path: str, headers: list[tuple[str, bytes]], **scope: Any) -> dict[str, Any]:
    fields = {
        "type": "http",
        "http_version": "1.1",
        "server": ("127.0.0.1", "8000"),
        "client": ("10.0.0.7", "51234"),
        "scheme": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": b"limit=5&status=started",
        "headers": [(k.encode(), v) for k, v in headers],
        **scope,
    }
    return _ASGIExchange(fields, None, None).environ()  # type: ignore[arg-type]


HEADERS = [
    ("host", b"pman.example:8000"),
    ("content-type", b"application/json"),
    ("content-length", b"17"),
    ("authorization", b"Bearer abc"),
    ("x-forwarded-for", b"1.1.1.1"),
    ("x-forwarded-for", b"2.2.2.2"),
    ("x-request-id", b"req-1"),
]


def test_a_request_makes_the_same_environ_through_either_interface() -> None:
    path = "/api/v1/caf\u00e9-1/"  # decoded from %C3%A9 by the server
    rsgi, asgi = _rsgi(path, HEADERS), _asgi(path, HEADERS)
    assert rsgi == asgi
    assert rsgi["PATH_INFO"] == "/api/v1/caf\u00c3\u00a9-1/"  # its UTF-8 bytes, as latin-1
    assert rsgi["CONTENT_TYPE"] == "application/json" and rsgi["CONTENT_LENGTH"] == "17"
    assert rsgi["HTTP_X_FORWARDED_FOR"] == "1.1.1.1,2.2.2.2"
    assert (rsgi["SERVER_NAME"], rsgi["SERVER_PORT"]) == ("127.0.0.1", "8000")
    assert (rsgi["REMOTE_ADDR"], rsgi["REMOTE_PORT"]) == ("10.0.0.7", "51234")
    assert rsgi["QUERY_STRING"] == "limit=5&status=started"
    assert rsgi["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert "wsgi.input" not in rsgi  # the bridge adds the body once read


def test_rsgi_addresses_of_ipv6_and_a_request_without_host() -> None:
    environ = _rsgi(
        "/health",
        [("accept", b"*/*")],
        server="[::1]:8000",
        client="[::ffff:10.0.0.7]:4000",
        http_version="2",
        authority="pman.example",
    )
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("::1", "8000")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("::ffff:10.0.0.7", "4000")
    assert environ["HTTP_HOST"] == "pman.example"  # HTTP/2's authority
    assert _rsgi("/health", [])["HTTP_HOST"] == ""  # as ASGI's scope gives it


def test_rsgi_keeps_a_header_whose_value_granian_cannot_give_as_empty() -> None:
    environ = _rsgi("/", [("host", b"h"), ("x-name", "Jos\u00e9".encode())])
    assert environ["HTTP_X_NAME"] == ""  # as pman 4.0.0 (granian's WSGI interface) had it


# ---------------------------------------------------------------- pacing


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket, str, str]]:
    """(the server's side, the client's side, and their addresses as RSGI writes them)"""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that keeps little
    client.connect(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    here, there = server.getsockname(), server.getpeername()
    yield server, client, f"{here[0]}:{here[1]}", f"{there[0]}:{there[1]}"
    server.close()
    client.close()


def test_a_stream_is_paced_to_what_its_client_acknowledged(
    connection: tuple[socket.socket, socket.socket, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client, local, peer = connection
    monkeypatch.setattr(pacing, "WINDOW", 64 * 1024)
    pacer = Pacer.find(local, peer)
    assert pacer is not None
    assert pacer.sock.getpeername() == client.getsockname()
    assert Pacer.find(local, "10.9.9.9:1") is None
    gone = threading.Event()
    sent = [0]
    chunk = b"x" * 16384

    def pump() -> None:
        while sent[0] < 64 << 20 and pacer.wait(len(chunk), gone):
            server.sendall(chunk)
            sent[0] += len(chunk)

    thread = threading.Thread(target=pump)
    thread.start()
    try:
        time.sleep(1.0)
        # the client reads nothing: what was passed on is its acknowledged
        # bytes (its small buffer) plus the window, not the 64 MiB
        stalled = sent[0]
        time.sleep(0.5)
        assert sent[0] == stalled
        assert stalled < 8 << 20, stalled
        # the client reads: the stream goes on
        client.settimeout(5)
        got = 0
        while got < 4 << 20:
            got += len(client.recv(1 << 20))
        assert sent[0] > stalled
    finally:
        gone.set()  # the client left: the stream's thread stops waiting
        thread.join(10)
    assert not thread.is_alive()
    pacer.close()
    server.getsockname()  # the server's own socket is still open


def test_a_stream_broken_off_is_seen_incomplete_by_its_client(
    connection: tuple[socket.socket, socket.socket, str, str],
) -> None:
    server, client, local, peer = connection
    pacer = Pacer.find(local, peer)
    assert pacer is not None
    server.sendall(b"partial")
    pacer.break_off()
    pacer.close()
    client.settimeout(5)
    received = b""
    while chunk := client.recv(1024):
        received += chunk
    assert received == b"partial"  # then the connection ended, without more
