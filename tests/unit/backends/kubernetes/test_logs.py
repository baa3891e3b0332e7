"""A job's log from its pods' logs: the pure parts (options, tails, prefixes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from pman.backends.kit.files import LOG_CHUNK
from pman.backends.kit.streams import LogStream
from pman.backends.kubernetes.errors import translator
from pman.backends.kubernetes.logs import PodLogs, joined_tails, log_options, prefixed
from tests.unit.backends.kubernetes.helpers import NOW, job, pod


def test_log_options() -> None:
    assert log_options(None, None, NOW) == {}
    assert log_options(0, None, NOW) is None
    assert log_options(5, None, NOW) == {"tail_lines": 5}
    since = NOW - timedelta(seconds=2.5)
    assert log_options(None, since, NOW) == {"since_seconds": 3}
    # the API wants at least one second
    assert log_options(3, NOW + timedelta(seconds=9), NOW) == {"tail_lines": 3, "since_seconds": 1}


def test_one_workers_tail_is_its_log() -> None:
    assert joined_tails([(0, "a\nb\nc")], 1, 2) == "b\nc\n"
    assert joined_tails([(0, "")], 1, 2) == ""
    assert joined_tails([], 1, 2) == ""


def test_several_workers_lines_are_prefixed_and_tailed_together() -> None:
    texts = [(0, "a\nb\n"), (1, "c\n")]
    assert joined_tails(texts, 2, 10) == "[worker 0] a\n[worker 0] b\n[worker 1] c\n"
    assert joined_tails(texts, 2, 2) == "[worker 0] b\n[worker 1] c\n"


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\nb\n"], [b"> a\n> b\n"]),
        ([b"a", b"b\nc"], [b"> ab\n", b"> c\n"]),
        ([b"", b"\n"], [b"> \n"]),
        ([], []),
    ],
)
def test_prefixed_lines(chunks: list[bytes], expected: list[bytes]) -> None:
    assert list(prefixed(chunks, b"> ")) == expected


def test_a_line_longer_than_a_chunk_comes_in_prefixed_pieces() -> None:
    long = b"x" * LOG_CHUNK
    assert list(prefixed([long, b"y\n"], b"> ")) == [b"> " + long, b"> y\n"]


class Response:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.released = False

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        pass


class FakeKube:
    """One Job and its pods' logs, as the API client gives them."""

    errors = translator("Kubernetes API at test", 30)

    def __init__(self, workers: int, pods: list[dict[str, Any]], logs: dict[str, str]) -> None:
        self.job = job({"active": 1}, workers=workers)
        self.pods = pods
        self.texts = logs
        self.opened: list[tuple[str, bool, dict[str, Any]]] = []

    def owned_job(self, name: str) -> dict[str, Any] | None:
        return self.job if name == "job-1" else None

    def pods_of(self, j: dict[str, Any]) -> list[dict[str, Any]]:
        return self.pods

    def pod_log(self, pod: str, tail: int) -> str:
        return "".join(self.texts.get(pod, "").splitlines(keepends=True)[-tail:])

    def open_pod_log(
        self, pod: str, follow: bool, options: dict[str, Any], stop: threading.Event
    ) -> Response | None:
        self.opened.append((pod, follow, options))
        return Response([self.texts[pod].encode()]) if pod in self.texts else None


def test_the_tail_of_each_workers_newest_pod() -> None:
    replaced = pod("Failed", 1, age=60)
    replaced["metadata"]["name"] = "job-1-1-old"
    pods = [replaced, pod("Running", 1), pod("Running", 0)]
    kube = FakeKube(
        2, pods, {"job-1-0-abcde": "a\nb\n", "job-1-1-abcde": "c", "job-1-1-old": "x\n"}
    )
    logs = PodLogs(kube, 60)
    assert logs.tail(kube.job, 5) == "[worker 0] a\n[worker 0] b\n[worker 1] c\n"


def test_a_single_workers_log_streams_as_it_comes() -> None:
    kube = FakeKube(1, [pod("Running", 0)], {"job-1-0-abcde": "tick 1\ntick 2\n"})
    logs = PodLogs(kube, 60)
    stream = logs.stream(kube.job, tail=2, follow=True)
    assert b"".join(stream) == b"tick 1\ntick 2\n"
    assert kube.opened == [("job-1-0-abcde", True, {"tail_lines": 2})]
    assert list(logs.stream(kube.job, tail=0)) == []


def test_an_aborted_stream_ends_without_reading_on() -> None:
    kube = FakeKube(1, [pod("Pending", 0)], {})
    stream = PodLogs(kube, 60).stream(kube.job, follow=True)
    assert isinstance(stream, LogStream)
    stream.abort()
    assert list(stream) == []


def test_several_workers_logs_stream_from_worker_0_on() -> None:
    # worker indexes are the Job's completion indexes, 0..N-1: the stream once
    # began at 1, leaving out worker 0 and waiting for a worker N that never comes
    pods = [pod("Succeeded", 1), pod("Succeeded", 0)]
    kube = FakeKube(2, pods, {"job-1-0-abcde": "a\n", "job-1-1-abcde": "b\n"})
    stream = PodLogs(kube, 60).stream(kube.job)
    assert b"".join(stream) == b"[worker 0] a\n[worker 1] b\n"
