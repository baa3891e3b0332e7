"""The watch on pman's Jobs as names of Jobs that may have ended or gone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import urllib3.exceptions

from pman.backends.kubernetes.watch import JobEvents
from tests.unit.backends.kubernetes.helpers import condition, job


class Response:
    """A watch response: its chunks, then maybe a broken connection."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.closed: list[str] = []

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error

    def shutdown(self) -> None:
        self.closed.append("shutdown")

    def release_conn(self) -> None:
        self.closed.append("released")


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def test_ended_and_deleted_jobs_are_named_others_are_not() -> None:
    data = b"".join(
        [
            event("ADDED", job({})),
            event("MODIFIED", job({"conditions": [condition("FailureTarget")]})),
            event("MODIFIED", job({"conditions": [condition("Complete")]})),
            event("DELETED", job({})),
            b"\n",
        ]
    )
    # an event split over two chunks
    response = Response([data[:30], data[30:]])
    assert list(JobEvents(response)) == ["", "job-1", "job-1", "job-1"]


def test_an_error_event_or_a_broken_stream_ends_it() -> None:
    gone = b'{"type": "ERROR", "object": {"code": 410}}\n'
    events = JobEvents(Response([event("ADDED", job({})), gone, event("DELETED", job({}))]))
    assert list(events) == [""]
    broken = Response([event("ADDED", job({}))], urllib3.exceptions.ProtocolError("reset"))
    assert list(JobEvents(broken)) == [""]
    assert list(JobEvents(Response([b"not json\n"]))) == []


def test_close_wakes_the_reader_and_releases_the_connection() -> None:
    response = Response([])
    JobEvents(response).close()
    assert response.closed == ["shutdown", "released"]
