"""A container's log as the Engine API sends it (stdout and stderr frames),
merged into one text a whole line at a time. Pure: no engine call."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pman.backends.kit.files import LOG_CHUNK

#: the longest unfinished line of one stream that demultiplexing holds back
#: while it waits for the stream to end it (then it goes out as it is)
MAX_HELD_LINE = 1024 * 1024


class LineMerger:
    """Merges the stdout and stderr frames of a container's log into one text
    a whole line at a time.

    An engine's frames need not end at a line's end: Podman's log (conmon)
    records what one read of the job's pipe gave, so a burst of output leaves
    a line in two frames, and a frame of the other stream can come between
    them. Concatenating frames then cuts that line and glues the other
    stream's line to its first half. Here a stream's unfinished line is held
    until the stream ends it, so each line of the result is a whole line of
    ONE stream: each stream's lines in their order, the two streams' lines
    in the order the engine completed them. Two exceptions, both rare: a line
    held past ``max_held`` bytes goes out unfinished, and the streams' last
    lines if unfinished go out at the end; where a stream's output does not
    end with a newline and the other stream's follows, a newline is put
    between them rather than make one line of the two.
    """

    def __init__(self, max_held: int = MAX_HELD_LINE) -> None:
        self.max_held = max_held
        #: each stream's unfinished line, in the order they began
        self._held: dict[int, bytearray] = {}
        #: the stream whose output went out without a final newline
        self._open: int | None = None

    def _out(self, stream: int, data: bytes) -> bytes:
        joint = b"\n" if self._open is not None and self._open != stream else b""
        self._open = None if data.endswith(b"\n") else stream
        return joint + data

    def feed(self, stream: int, data: bytes) -> bytes:
        """What can go out after ``data`` of ``stream`` (b"" while a line is unfinished)."""
        held = self._held.get(stream)
        if held is None:
            if data.endswith(b"\n"):
                return self._out(stream, data)  # whole lines, as most frames are
            if not data:
                return b""
            held = self._held[stream] = bytearray()
        # the end of the stream's last whole line (what is held has no newline)
        end = data.rfind(b"\n") + 1
        cut = len(held) + end if end else 0
        held += data
        if len(held) - cut > self.max_held:
            cut = len(held)
        if not cut:
            return b""
        out = bytes(held[:cut])
        del self._held[stream]
        if cut < len(held):  # a new unfinished line, begun now
            del held[:cut]
            self._held[stream] = held
        return self._out(stream, out)

    def end(self) -> bytes:
        """The unfinished last lines, once the streams have ended."""
        out = b"".join(self._out(stream, bytes(held)) for stream, held in self._held.items())
        self._held.clear()
        return out


def _header(header: bytes) -> bool:
    """Whether 8 bytes are a frame header: stream type (0-2), 3 zero bytes, length."""
    return len(header) == 8 and header[0] in (0, 1, 2) and header[1:4] == b"\0\0\0"


def demultiplex(data: bytes, max_held: int = MAX_HELD_LINE) -> bytes:
    """stdout and stderr of a non-TTY container's log, whole lines (see LineMerger).

    The stream is frames of an 8-byte header (stream type, 3 zero bytes, a
    big-endian payload length) and the payload:
    https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Container/operation/ContainerAttach
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 8 <= len(data):
        if not _header(data[pos : pos + 8]):
            return data  # not multiplexed (a TTY): the bytes are the logs
        size = int.from_bytes(data[pos + 4 : pos + 8], "big")
        frames.append((data[pos], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    if pos != len(data):
        return data
    merger = LineMerger(max_held)
    return b"".join(merger.feed(stream, payload) for stream, payload in frames) + merger.end()


def demultiplex_stream(
    read: Callable[[int], bytes], chunk: int = LOG_CHUNK, max_held: int = MAX_HELD_LINE
) -> Iterator[bytes]:
    """``demultiplex`` for a stream: ``read(n)`` gives at most ``n`` bytes, b"" at
    the end. Reads a frame's payload in pieces of at most ``chunk`` bytes and
    yields whole lines as they complete (see LineMerger), so a long log never
    sits in memory whole and a followed stream yields each line as the engine
    sends its end."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = read(n - len(data))
            if not more:
                break
            data += more
        return data

    merger = LineMerger(max_held)
    while True:
        header = exactly(8)
        if not header:
            break
        if not _header(header):
            # not multiplexed (a TTY): the bytes are the logs
            yield header
            while data := read(chunk):
                yield data
            return
        stream, size = header[0], int.from_bytes(header[4:8], "big")
        while size > 0:
            data = exactly(min(size, chunk))
            if not data:
                break  # the engine closed the stream mid-frame
            size -= len(data)
            if out := merger.feed(stream, data):
                yield out
        if size > 0:
            break
    if out := merger.end():
        yield out
