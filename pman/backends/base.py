"""The interface every engine adapter implements."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pman.errors import InvalidJobSpec, JobNotFound, UnsupportedOption
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings


@dataclass(frozen=True)
class Outcome:
    """A job's state as an adapter works it out from the engine's objects."""

    state: JobState
    #: short machine-friendly cause, as JobInfo.reason
    reason: str = ""
    message: str = ""
    exit_code: int | None = None


class ChangeStream(Protocol):
    """The engine's own notifications that some of pman's jobs changed.

    Iterating blocks until the next notification and yields the name of a
    job that may have ended or gone (the tracker then asks the engine about
    it directly, as an engine's list may lag behind its events), or "" for
    other changes (started, say); iteration ends when the stream breaks.
    ``close`` may be called from another thread to end it.
    """

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


#: the lines the default ``iter_logs`` asks ``logs`` for when no tail is given
DEFAULT_FULL_LOG_LINES = 100_000
#: bytes per read of a log file or an engine's log stream
LOG_CHUNK = 64 * 1024
#: a followed log file's job is asked at most this often whether it has ended
FOLLOW_CHECK_S = 1.0


class LogStream:
    """A job's log as an iterator of chunks that another thread may end at once.

    A followed log blocks in the engine's read for as long as the job is
    silent; ``abort`` (from any thread) makes that read return, after which
    the iterator simply ends: an aborted stream is a finished one, not an
    error. The server aborts streams whose client went away or that passed no
    data for too long (pman.api.lanes).
    """

    def __init__(self, chunks: Iterator[bytes], on_abort: Callable[[], None] | None = None) -> None:
        self._chunks = chunks
        self._on_abort = on_abort
        self.aborted = threading.Event()

    def __iter__(self) -> LogStream:
        return self

    def __next__(self) -> bytes:
        if self.aborted.is_set():
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            raise
        except Exception:
            if self.aborted.is_set():
                raise StopIteration from None  # the read we broke on purpose
            raise

    def abort(self) -> None:
        if self.aborted.is_set():
            return
        self.aborted.set()
        if self._on_abort is not None:
            self._on_abort()

    def close(self) -> None:
        """Release the engine's stream (from the thread that iterates)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def shutdown_response(response: Any) -> None:
    """Make a read blocked on an HTTP response (urllib3's, as requests and the
    kubernetes client use) return now, from another thread."""
    raw = getattr(response, "raw", response)
    with contextlib.suppress(Exception):
        raw.shutdown()


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


class Backend(ABC):
    """One compute engine. Adapters raise only pman's own exceptions (pman.errors)."""

    #: the CONTAINER_ENV value that selects this backend
    name: ClassVar[str]
    #: job names the engine accepts, and the rule in words for error messages
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
    name_rule: ClassVar[str] = (
        "1 to 128 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """Build the backend. Must not make network calls."""

    def check_name(self, name: str) -> None:
        """Raise InvalidJobSpec (field ``jid``) if the engine cannot use ``name``."""
        if not self.name_pattern.fullmatch(name):
            raise InvalidJobSpec(
                f"jid {name!r} cannot be used as a {self.name} job name: {self.name_rule}",
                fields={"jid": self.name_rule},
            )

    @abstractmethod
    def submit(self, spec: JobSpec) -> JobInfo:
        """Create and start the job. Raises JobExists if the name is taken."""

    @abstractmethod
    def get(self, name: str) -> JobInfo:
        """The job's current state. Raises JobNotFound."""

    @abstractmethod
    def logs(self, name: str, tail: int) -> str:
        """The last ``tail`` lines of the job's combined stdout and stderr."""

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The job's whole log (or its last ``tail`` lines, or what it wrote at
        or after ``since``) as chunks of bytes, never the whole log in memory;
        with ``follow`` the iterator keeps going until the job ends.

        Raises JobNotFound (and other pman errors) when CALLED, so the caller
        can answer with an error before the first byte; closing the iterator
        releases whatever engine stream it holds. This default serves engines
        without a streaming log call: what ``logs`` gives, no ``since`` and no
        ``follow``.
        """
        if since is not None or follow:
            option = "since" if since is not None else "follow"
            raise UnsupportedOption(
                f"the {self.name} backend cannot give a job's logs with {option!r}",
                fields={option: f"not supported by the {self.name} backend"},
            )
        text = self.logs(name, tail if tail is not None else DEFAULT_FULL_LOG_LINES)
        data = text.encode()
        return iter([data] if data else [])

    def _file_logs(
        self,
        name: str,
        path: Path,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        poll: float = 0.2,
    ) -> Iterator[bytes]:
        """``iter_logs`` for engines that keep a job's output in a plain file
        (no timestamps: ``since`` is refused); a follow ends when ``get`` says
        the job has ended or is gone."""
        if since is not None:
            raise UnsupportedOption(
                f"the {self.name} backend cannot filter logs by time: a job's output file "
                "has no timestamps",
                fields={"since": f"not supported by the {self.name} backend"},
            )

        def ended() -> bool:
            try:
                return self.get(name).state.finished
            except JobNotFound:
                return True  # deleted meanwhile

        stop = threading.Event()
        return LogStream(
            read_file_chunks(path, tail, ended if follow else None, poll=poll, stop=stop),
            on_abort=stop.set,
        )

    def cancel(self, name: str) -> None:
        """Stop the job's work but keep what holds its logs and its final state.

        Cancelling a finished job is a no-op; an unknown job raises JobNotFound.
        """
        raise UnsupportedOption(
            f"the {self.name} backend cannot cancel a job; DELETE removes it",
            fields={"jid": f"cancel is not supported by the {self.name} backend"},
        )

    @abstractmethod
    def delete(self, name: str) -> None:
        """Stop the job if it runs and remove it. Deleting twice is not an error."""

    @abstractmethod
    def list(self) -> list[JobInfo]:
        """Every job pman created that the engine knows, in ONE engine call.

        The state may be coarser than ``get`` gives (no OOM flag, say): the
        tracker calls ``get`` for a job whose state changed.
        """

    def list_active(self) -> list[JobInfo]:
        """Jobs not finished yet, in one engine call; engines that can filter
        on their side override this so a cycle's cost follows running jobs only."""
        return [info for info in self.list() if not info.state.finished]

    def watch(self) -> ChangeStream | None:
        """The engine's event stream for pman's jobs, or None if it has none.

        With a stream the tracker looks as soon as something changes and polls
        only as a safety net; without one it polls every PMAN_TRACKER_INTERVAL.
        Raises BackendUnavailable when the engine cannot be reached.
        """
        return None

    @abstractmethod
    def ping(self) -> None:
        """Return if the engine answers, else raise BackendUnavailable."""

    def describe(self) -> str:
        """A few words naming the engine and where it is, for messages."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""
