"""Where the code after 4.0.0 answers differently from the recording, on purpose.

Each change names one exchange of the recording, the place in it that
differs (a path of keys), what it is now, and why. The contract test
applies them to the recording before it compares; it fails when a change no
longer differs from the recording (remove it then), so this list is always
the whole truth about what changed. The lead decides which may stay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    exchange: str
    path: tuple[str | int, ...]
    now: Any
    why: str


CHANGES: tuple[Change, ...] = (
    Change(
        "health",
        ("response", "body", "backend"),
        "local processes in bubblewrap sandboxes (job records in <workdir>/data/local/jobs)",
        "the local sandbox (commit ae4b401, after 4.0.0): the backend's description, which "
        "/health shows for people, says that jobs run in a bubblewrap sandbox",
    ),
    Change(
        "metrics",
        ("response", "body"),
        [
            "pman_engine_call_duration_seconds",
            "pman_http_request_duration_seconds",
            "pman_http_requests_total",
            "pman_jobs",
            "pman_log_streams_open",
            "pman_queue_length",
            "pman_tracker_cycles_total",
            "pman_tracker_lag_seconds",
            "pman_tracker_last_cycle_timestamp_seconds",
            "pman_tracker_visibility_lag_seconds",
        ],
        "issue 13 (commit 6bc5a06): a new gauge, pman_log_streams_open (the log streams "
        "being served); pman_refused_requests_total, also new, shows only once a request "
        "was refused, which this scenario never makes happen. And the backends redesign "
        "(the local backend as a package, merge 3c3d7af): the local backend refuses "
        "gpu_limit 1 and number_of_workers 2 before calling the engine, where 4.0.0's "
        "submit raised UnsupportedOption; the answers (400, same words) are the same, but "
        "no engine call fails in this scenario now, so pman_engine_errors_total (shown only "
        "once one has) is absent: 4.0.0 counted 2 (kind UnsupportedOption, operation submit)",
    ),
)


@dataclass(frozen=True)
class Added:
    """A field added to every JSON object of the answers that ``where`` picks
    (nothing is removed or renamed: clients of 4.0.0 read the answers as before)."""

    field: str
    value: Any
    where: Callable[[dict[str, Any]], bool]
    why: str


def _job_object(obj: dict[str, Any]) -> bool:
    """A job body (POST, poll, cancel answers), a list's item, an events answer."""
    return isinstance(obj.get("jid"), str) and ("status" in obj or "events" in obj)


ADDED: tuple[Added, ...] = (
    Added(
        "compute_resource",
        "default",
        _job_object,
        "issue 15 (compute resources): every job body, list item and events answer says "
        "which compute resource the job runs on; without PMAN_RESOURCES that is the one "
        "resource of the unprefixed variables, 'default'",
    ),
)


@dataclass(frozen=True)
class Extended:
    """The answer at ``path`` of ``exchange`` only ADDS to 4.0.0's: every key,
    list item and value 4.0.0 answered is still there, unchanged (the test
    checks it, then takes the answer as it is now)."""

    exchange: str
    path: tuple[str | int, ...]
    why: str


EXTENDED: tuple[Extended, ...] = (
    Extended(
        "health",
        ("response", "body"),
        "issue 15 (compute resources): /health adds resources, each compute resource's "
        "backend and health ({'default': {...}} without PMAN_RESOURCES)",
    ),
    Extended(
        "openapi",
        ("response", "body"),
        "issue 15 (compute resources): the document adds compute_resource (the request's "
        "optional field, the job bodies' added field, the list's filter), Health's "
        "resources, and GET /api/v1/resources/ with its schemas",
    ),
)


def extends(now: Any, then: Any) -> bool:
    """``now`` holds everything of ``then`` unchanged (and may hold more)."""
    if isinstance(then, dict):
        return isinstance(now, dict) and all(
            k in now and extends(now[k], v) for k, v in then.items()
        )
    if isinstance(then, list):
        return isinstance(now, list) and all(any(extends(n, t) for n in now) for t in then)
    return bool(now == then)
