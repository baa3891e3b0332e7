"""A job's log as a stream of chunks that another thread may end at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


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
