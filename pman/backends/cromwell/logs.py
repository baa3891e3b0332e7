"""A job's log: the stdout and stderr files of its tasks (one task per
worker, each worker's lines prefixed "[worker i] " when there are several),
tailed or followed where pman can read them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pman.backends.cromwell.state import job_calls
from pman.backends.kit import files

#: at most this much of a log file is read to find its last lines
LOG_READ_LIMIT = 4 * 1024 * 1024

#: one log file of a job: the prefix of its lines, "stdout" or "stderr", its path
LogFile = tuple[str, str, str]


def log_files(answer: dict[str, Any]) -> list[LogFile]:
    """The stdout and stderr files of the job's tasks in Cromwell's answer to
    ``GET /api/workflows/v1/{id}/logs``, in the order a log gives them."""
    calls = job_calls(answer)
    many = len(calls) > 1
    found = []
    for call in calls:
        prefix = f"[worker {call.get('shardIndex')}] " if many else ""
        for key in ("stdout", "stderr"):
            path = call.get(key)
            if path:
                found.append((prefix, key, str(path)))
    return found


def tail_lines(path: str, lines: int, limit: int = LOG_READ_LIMIT) -> list[str]:
    """The last ``lines`` lines of a file (without carriage returns), reading
    backwards from its end and at most ``limit`` bytes: never the whole file
    into memory. A missing file has none."""
    text = files.tail_lines(path, lines, limit=limit)
    return text.replace("\r", "").splitlines(keepends=True)


def tail_text(found: list[LogFile], tail: int) -> str:
    """The last ``tail`` lines of the job's log files, each prefixed, one after
    the other; a file pman cannot read is a line that says so."""
    out: list[str] = []
    for prefix, key, path in found:
        if "://" in path:  # in a bucket, say: not on pman's filesystem
            out.append(f"{prefix}pman cannot read the job's {key} at {path}\n")
            continue
        try:
            lines = tail_lines(path, tail)
        except OSError as e:
            lines = [f"pman cannot read the job's {key} at {path}: {e.strerror}\n"]
        out.extend(prefix + line for line in lines)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    return "".join(out[-tail:]) if tail > 0 else ""


def follow_files(
    sources: list[tuple[str, str]],
    tail: int | None,
    refresh: Callable[[], list[tuple[str, str]]] | None,
    ended: Callable[[], bool] | None,
    poll: float = 1.0,
) -> Iterator[bytes]:
    """Whole lines of several files (``(prefix, path)``) in turn, each with its
    prefix, from the start of the last ``tail`` lines of them all; with
    ``refresh`` and ``ended``, again every ``poll`` seconds (files may appear
    or grow) until the writer has ended. A line is read in pieces of at most
    LOG_CHUNK bytes."""
    offsets: dict[str, int] = {}
    if tail is not None:
        want = tail
        for _, path in reversed(sources):
            start = files.tail_offset(Path(path), want) if want > 0 else _size(path)
            offsets[path] = start
            want -= _count_lines(path, start)
            want = max(want, 0)

    def drain(final: bool) -> Iterator[bytes]:
        for prefix, path in sources:
            if "://" in path:  # in a bucket, say: not on pman's filesystem
                if path not in offsets:
                    offsets[path] = 0
                    yield f"{prefix}pman cannot read the job's log at {path}\n".encode()
                continue
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                continue  # not written yet
            except OSError as e:
                if path not in offsets:
                    offsets[path] = 0
                    yield f"{prefix}pman cannot read {path}: {e.strerror}\n".encode()
                continue
            with f:
                f.seek(offsets.get(path, 0))
                while line := f.readline(files.LOG_CHUNK):
                    if not line.endswith(b"\n") and len(line) < files.LOG_CHUNK and not final:
                        break  # half a line: the rest comes at the next pass
                    offsets[path] = f.tell()
                    yield prefix.encode() + line
                    if not line.endswith(b"\n") and final:
                        yield b"\n"

    if refresh is None or ended is None:
        yield from drain(final=True)
        return
    while True:
        done = ended()
        yield from drain(final=done)
        if done:
            return
        time.sleep(poll)
        sources = refresh()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _count_lines(path: str, start: int) -> int:
    """Lines from ``start`` to the end (a last line without newline counts)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return 0
    count, last = 0, b"\n"
    with f:
        f.seek(start)
        while data := f.read(files.LOG_CHUNK):
            count += data.count(b"\n")
            last = data[-1:]
    return count + (last != b"\n")
