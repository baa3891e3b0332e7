"""Calling the (WSGI, Flask) application from a server interface's thread."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pman.api.exchange import Headers, Response
from pman.api.lanes import WSGIApp


def start_app(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, Headers, Any]:
    """Call the application: its status, headers and (unread) body."""
    started: list[Any] = []

    def start_response(
        status: str, headers: Headers, exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = (int(status[:3]), headers)
        return _no_write

    body = app(environ, start_response)
    if not started:  # a generator that calls start_response when iterated
        body = _Prefetched(body)
    return started[0], started[1], body


def _no_write(_data: bytes) -> None:
    raise NotImplementedError("pman's application does not use write()")


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


def complete(app: WSGIApp, environ: dict[str, Any]) -> Response:
    """Call the application and read its (small, bounded) body in full."""
    status, headers, body = start_app(app, environ)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return status, headers, data
