"""The times engines print, as aware datetimes (UTC when the engine gives no zone)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

#: fractions of a second longer than Python's microseconds (Docker gives
#: nanoseconds): cut to six digits
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
#: what engines print for "no time": Docker's zero time, SLURM's words
_NO_TIME = ("0001-01-01", "N/A", "Unknown", "NONE", "None")


def parse_time(text: Any, *, naive_is_local: bool = False) -> datetime | None:
    """An ISO 8601 time ("2024-05-01T10:00:00.123456789Z", "+00:00", no zone),
    None for no time (empty, Docker's zero time, SLURM's N/A) or text that is
    no time at all.

    A time without a zone is UTC, or the host's local time with
    ``naive_is_local`` (SLURM prints local times); the result is in UTC then.
    """
    if not text or not isinstance(text, str):
        return None
    text = text.strip()
    if text.startswith(_NO_TIME):
        return None
    text = _LONG_FRACTION.sub(r"\1", text.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.astimezone(UTC) if naive_is_local else parsed.replace(tzinfo=UTC)
    return parsed
