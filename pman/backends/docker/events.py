"""The Engine API's /events stream as the names of pman's jobs that changed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import requests.exceptions

#: the name of the job an event is about ("" for none in particular), None
#: for an event to ignore
JobOfEvent = Callable[[dict[str, Any]], str | None]


class EngineEvents:
    """A decoded /events stream as a :class:`~pman.backends.base.ChangeStream`:
    the name of a job after an ``ended`` event (it may have ended or gone), ""
    after a ``changed`` one; other events are skipped. Iteration ends when the
    stream breaks or is closed."""

    def __init__(
        self,
        stream: Iterable[dict[str, Any]],
        job_of: JobOfEvent,
        ended: frozenset[str],
        changed: frozenset[str],
    ) -> None:
        self._stream = stream
        self._job_of = job_of
        self._ended = ended
        self._changed = changed

    def __iter__(self) -> Iterator[str]:
        try:
            for event in self._stream:
                name = self._job_of(event)
                if name is None:
                    continue
                action = event.get("Action", event.get("status"))
                if action in self._ended:
                    yield name
                elif action in self._changed:
                    yield ""
        except (requests.exceptions.RequestException, OSError, ValueError, AttributeError):
            return  # the stream broke (or was closed): the caller reconnects

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()  # type: ignore[attr-defined]
