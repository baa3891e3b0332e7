"""Log files: read in chunks, tailed from their end, followed while a job runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: the lines the default ``iter_logs`` asks ``logs`` for when no tail is given
DEFAULT_FULL_LOG_LINES = 100_000
#: bytes per read of a log file or an engine's log stream
LOG_CHUNK = 64 * 1024
#: a followed log file's job is asked at most this often whether it has ended
FOLLOW_CHECK_S = 1.0


def read_file_chunks(
    path: Path,
    tail: int | None = None,
    follow_until: Callable[[], bool] | None = None,
    poll: float = 0.2,
    chunk: int = LOG_CHUNK,
    stop: threading.Event | None = None,
) -> Iterator[bytes]:
    """A log file in chunks of at most ``chunk`` bytes: all of it, or from the
    start of its last ``tail`` lines (found by reading backwards from the end).

    With ``follow_until`` (a function that is True once the writer has ended)
    it keeps reading what is appended, every ``poll`` seconds, and stops after
    the first read that finds nothing new once the writer has ended, or once
    ``stop`` is set. A missing file is an empty log (the job has not written yet).
    """
    offset = 0 if tail is None else tail_offset(path, tail)
    # asking whether the writer ended costs more than a read (the engine's
    # state): at most once a FOLLOW_CHECK_S, however short ``poll`` is
    checked = 0.0
    while True:
        ended = True
        if follow_until is not None:
            ended = False
            if time.monotonic() - checked >= FOLLOW_CHECK_S:
                checked = time.monotonic()
                ended = follow_until()
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            f = None
        if f is not None:
            with f:
                f.seek(offset)
                while data := f.read(chunk):
                    offset += len(data)
                    yield data
        if ended:
            return
        if stop is None:
            time.sleep(poll)
        elif stop.wait(poll):
            return


def tail_offset(path: Path, n: int, block: int = LOG_CHUNK) -> int:
    """Where the last ``n`` lines of a file start, reading only blocks of its end.

    A last line without a final newline counts as a line.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        if n <= 0:
            return end
        pos = end
        newlines = 0
        # a final newline ends the last line; it does not start another
        if end > 0:
            f.seek(end - 1)
            if f.read(1) == b"\n":
                newlines = -1
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step)
            i = len(data)
            while True:
                i = data.rfind(b"\n", 0, i)
                if i < 0:
                    break
                newlines += 1
                if newlines == n:
                    return pos + i + 1
        return 0


def tail_lines(path: Path | str, n: int, limit: int | None = None) -> str:
    """The last ``n`` lines of a file, reading only blocks of its end (at most
    ``limit`` bytes when given: a first line cut by the limit is left out).
    A missing file has no lines."""
    if n <= 0:
        return ""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return ""
    with f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(LOG_CHUNK, pos)
            if limit is not None:
                step = min(step, limit - (end - pos))
                if step <= 0:
                    break
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.splitlines(keepends=True)
    if pos > 0 and lines and data.count(b"\n") <= n:
        lines = lines[1:]  # stopped by the limit inside a line: only its end was read
    return b"".join(lines[-n:]).decode("utf-8", errors="replace")
