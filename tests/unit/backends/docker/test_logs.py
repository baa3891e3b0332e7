"""Demultiplexing a container's log (Docker's and Podman's frames of stdout and
stderr) into one text: every line whole, each stream's lines in order."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from pman.backends.docker.logs import LineMerger, demultiplex, demultiplex_stream

OUT, ERR = 1, 2


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def streamed(data: bytes, read_sizes: random.Random | None = None, **kw: int) -> bytes:
    """demultiplex_stream over ``data``, reads of random sizes when given a Random."""
    buf = io.BytesIO(data)

    def read(n: int) -> bytes:
        return buf.read(n if read_sizes is None else read_sizes.randint(1, n))

    return b"".join(demultiplex_stream(read, **kw))


def both(data: bytes, **kw: int) -> bytes:
    """What both demultiplexers give; they must agree."""
    whole = demultiplex(data, **({"max_held": kw["max_held"]} if "max_held" in kw else {}))
    assert streamed(data, **kw) == whole
    assert streamed(data, random.Random(len(data)), **kw) == whole
    return whole


#: The frames Podman 4.3.1 gave (GET /containers/<id>/logs?stdout=1&stderr=1)
#: for `i=1; while [ $i -le 2000 ]; do echo line $i; ...; done; echo err >&2`:
#: conmon's read of the stdout pipe ended inside "line 1916", its next read was
#: of stderr. The engine's log file (k8s-file) holds the same records:
#:   stdout F line 1915 / stdout P li / stderr F err / stdout F ne 1916
PODMAN_FRAMES = [
    (OUT, b"line 1915\n"),
    (OUT, b"li"),
    (ERR, b"err\n"),
    (OUT, b"ne 1916\n"),
    (OUT, b"line 1917\n"),
]


def test_a_line_the_engine_cut_is_not_glued_to_the_other_streams_line() -> None:
    """pman used to concatenate the frames: "line 1915\\nlierr\\nne 1916\\n...",
    which lost the line "err" (glued to "li") and altered "line 1916"."""
    data = b"".join(frame(s, p) for s, p in PODMAN_FRAMES)
    assert both(data) == b"line 1915\nerr\nline 1916\nline 1917\n"


def test_every_line_whole_and_each_stream_in_order_however_the_frames_fall() -> None:
    for seed in range(300):
        rnd = random.Random(seed)
        streams = {
            s: [
                f"{'o' if s == OUT else 'e'}{i} {'x' * rnd.choice((0, 1, 5, 40, 300))}".encode()
                for i in range(rnd.randint(0, 40))
            ]
            for s in (OUT, ERR)
        }
        # each stream's bytes cut at random places into frames (an empty frame too),
        # the two streams' frames interleaved at random
        pieces: dict[int, list[bytes]] = {}
        for s, lines in streams.items():
            text = b"".join(line + b"\n" for line in lines)
            cuts = sorted(rnd.sample(range(len(text) + 1), min(len(text) + 1, rnd.randint(0, 30))))
            bounds = [0, *cuts, len(text)]
            pieces[s] = [text[a:b] for a, b in itertools.pairwise(bounds)]
        frames = []
        while pieces[OUT] or pieces[ERR]:
            s = rnd.choice([s for s in (OUT, ERR) if pieces[s]])
            frames.append(frame(s, pieces[s].pop(0)))
        data = b"".join(frames)

        got = both(data, chunk=rnd.choice((1, 3, 64, 65536))).split(b"\n")
        assert got.pop() == b"", seed  # ends with a newline (or is empty)
        for s, prefix in ((OUT, b"o"), (ERR, b"e")):
            assert [line for line in got if line.startswith(prefix)] == streams[s], seed
        assert len(got) == len(streams[OUT]) + len(streams[ERR]), seed


def test_unfinished_last_lines_of_both_streams_are_not_made_one() -> None:
    data = frame(OUT, b"out 1\nno newline") + frame(ERR, b"err 1\nneither")
    assert both(data) == b"out 1\nerr 1\nno newline\nneither"
    # one stream alone keeps its missing final newline
    assert both(frame(OUT, b"a\nb")) == b"a\nb"


def test_a_line_longer_than_the_bound_goes_out_unfinished() -> None:
    data = frame(OUT, b"x" * 10) + frame(ERR, b"err\n") + frame(OUT, b"y\n")
    # held up to 8 bytes: the 10 go out, then stderr's line on a line of its own
    assert both(data, max_held=8) == b"xxxxxxxxxx\nerr\ny\n"
    # within the bound the line waits for its end
    assert both(data, max_held=16) == b"err\nxxxxxxxxxxy\n"


def test_a_followed_stream_yields_each_line_when_it_is_complete() -> None:
    data = frame(OUT, b"tick 1\n") + frame(OUT, b"tick") + frame(OUT, b" 2\n")
    buf = io.BytesIO(data)
    lines = demultiplex_stream(buf.read)
    assert next(lines) == b"tick 1\n"
    assert buf.tell() == 8 + 7  # nothing read past the first line's frame
    assert next(lines) == b"tick 2\n"
    assert list(lines) == []


@pytest.mark.parametrize(
    "data",
    [b"plain tty text\n", b"", b"\x01\x00\x00\x00\x00\x00\x00\x09line 1\n"],  # truncated frame
)
def test_what_is_not_whole_frames_is_passed_on(data: bytes) -> None:
    assert demultiplex(data) == data


def test_a_stream_closed_inside_a_frame_keeps_what_came() -> None:
    data = frame(OUT, b"whole\n") + frame(ERR, b"cut sh")[:-2]
    assert streamed(data) == b"whole\ncut "


def test_the_merger_is_bounded() -> None:
    merger = LineMerger(max_held=1000)
    for _ in range(100):
        merger.feed(OUT, b"x" * 64)
        assert sum(len(h) for h in merger._held.values()) <= 1000 + 64


# moved from tests/unit/test_states.py
def test_demultiplex_log_frames() -> None:
    def frame(stream: int, payload: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    data = frame(1, b"out 1\n") + frame(2, b"err\n") + frame(1, b"out 2\n")
    assert demultiplex(data) == b"out 1\nerr\nout 2\n"
    assert demultiplex(b"") == b""
    assert demultiplex(b"plain tty text\n") == b"plain tty text\n"
