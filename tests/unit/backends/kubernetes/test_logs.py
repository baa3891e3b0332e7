"""A job's log from its pods' logs: the pure parts (options, tails, prefixes)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pman.backends.kit.files import LOG_CHUNK
from pman.backends.kubernetes.logs import joined_tails, log_options, prefixed
from tests.unit.backends.kubernetes.helpers import NOW


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
