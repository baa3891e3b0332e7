"""A watch on pman's Jobs as the names of those that may have ended or gone."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import urllib3
import urllib3.exceptions

from pman.backends.kubernetes.state import ENDING_CONDITIONS, true_conditions


class JobEvents:
    """The watch's events (one JSON object a line) as the tracker's ChangeStream:
    a Job's name when it was deleted or may have ended, "" for other changes."""

    def __init__(self, response: urllib3.HTTPResponse) -> None:
        self._response = response

    def __iter__(self) -> Iterator[str]:
        buffer = b""
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        return  # e.g. 410 Gone: resourceVersion too old; the caller re-opens
                    obj = event.get("object") or {}
                    name = str((obj.get("metadata") or {}).get("name", ""))
                    ended = event.get("type") == "DELETED" or bool(
                        ENDING_CONDITIONS & set(true_conditions(obj))
                    )
                    yield name if ended else ""
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError):
            return  # the stream broke (or was closed): the caller reconnects

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.shutdown()  # wakes a read blocked in another thread
        with contextlib.suppress(Exception):
            self._response.release_conn()
