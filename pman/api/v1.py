"""The v1 HTTP API, wire-compatible with upstream FNNDSC/pman, plus the
registry's list and events."""

from __future__ import annotations

import logging
import re
import shlex
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.routing import BaseConverter

from pman.api import schemas
from pman.api.context import runtime
from pman.api.openapi import openapi_document
from pman.errors import InvalidJobSpec, JobNotFound, PmanError
from pman.models import JobInfo, JobRequest, JobState
from pman.registry import JobRecord
from pman.service import RESERVED_JIDS

log = logging.getLogger(__name__)

v1 = Blueprint("v1", __name__, url_prefix="/api/v1")
health = Blueprint("health", __name__)


class JidConverter(BaseConverter):
    """A jid in a URL: one path segment that is not a route of the API's own,
    so that /api/v1/jobs/ answers 405 to DELETE and its Allow header lists GET only."""

    regex = "(?!(?:" + "|".join(sorted(re.escape(n) for n in RESERVED_JIDS)) + ")(?:/|$))[^/]+"


v1.record_once(lambda state: state.app.url_map.converters.setdefault("jid", JidConverter))

#: pman's states as upstream's five status strings
V1_STATUS: dict[JobState, schemas.JobStatus] = {
    JobState.QUEUED: "notstarted",
    JobState.RUNNING: "started",
    JobState.SUCCEEDED: "finishedSuccessfully",
    JobState.FAILED: "finishedWithError",
    JobState.SYSTEM_ERROR: "finishedWithError",
    JobState.CANCELLED: "finishedWithError",
    JobState.UNKNOWN: "undefined",
}
MAX_PAGE = 500


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def job_body(info: JobInfo, logs: str) -> dict[str, Any]:
    """The v1 job body (schemas.Job; built as a dict: it is on the poll path)."""
    return {
        "jid": info.name,
        "image": info.image,
        "cmd": shlex.join(info.command),
        "status": V1_STATUS[info.state],
        "message": info.message,
        "timestamp": _iso(info.timestamp) or "",
        "logs": logs,
    }


def summary_body(r: JobRecord) -> dict[str, Any]:
    return schemas.JobSummary(
        jid=r.jid,
        status=V1_STATUS[r.state],
        state=r.state.value,  # type: ignore[arg-type]
        message=r.message,
        exit_code=r.exit_code,
        reason=r.reason,
        image=r.image,
        cmd=shlex.join(r.cmd),
        auid=r.auid,
        labels=r.labels,
        submitted_at=r.submitted_at.isoformat(),
        started_at=_iso(r.started_at),
        finished_at=_iso(r.finished_at),
        deleted_at=_iso(r.deleted_at),
    ).model_dump()


def _validation_error(e: ValidationError) -> InvalidJobSpec:
    fields: dict[str, str] = {}
    for err in e.errors():
        loc = err["loc"]
        name = str(loc[0]) if loc else "body"
        if err["type"] == "extra_forbidden":
            text = "unknown field"
        elif err["type"] == "missing":
            text = "field required"
        else:
            text = err["msg"].removeprefix("Value error, ")
            if len(loc) > 1:
                text = f"item {loc[1]}: {text}"
        fields.setdefault(name, text)
    summary = "; ".join(f"{k}: {v}" for k, v in fields.items())
    return InvalidJobSpec(f"invalid job request: {summary}", fields=fields)


def _job_name(jid: str) -> str:
    """The jid of a URL; one the engine could never have accepted is simply unknown
    (and never reaches the backend, where it might be a path)."""
    jid = jid.lstrip("/")
    try:
        runtime().backend.check_name(jid)
    except InvalidJobSpec:
        raise JobNotFound(f"no job named {jid!r}") from None
    return jid


@v1.get("/")
def server_info() -> Response:
    s = runtime().settings
    info = schemas.ServerInfo(
        server_version=s.server_version,
        container_env=s.container_env,
        storage_type=s.storage_type,
    )
    return jsonify(info.model_dump())


@v1.post("/")
def submit_job() -> tuple[Response, int]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise InvalidJobSpec("the request body must be a JSON object", fields={"body": "not JSON"})
    try:
        model = schemas.JobRequest.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from None
    done = runtime().service.submit(JobRequest(**model.model_dump()))
    return jsonify(job_body(done.record.info(), "")), 201 if done.created else 200


@v1.get("/<jid:jid>/", strict_slashes=False)
def get_job(jid: str) -> Response:
    record, logs = runtime().service.status(_job_name(jid))
    return jsonify(job_body(record.info(), logs))


@v1.delete("/<jid:jid>/", strict_slashes=False)
def delete_job(jid: str) -> tuple[str, int]:
    runtime().service.delete(_job_name(jid))
    return "", 204


@v1.get("/<jid:jid>/events/", strict_slashes=False)
def job_events(jid: str) -> Response:
    record, events = runtime().service.events(_job_name(jid))
    body = schemas.JobEvents(
        jid=record.jid,
        events=[
            schemas.JobEvent(
                at=e.at.isoformat(),
                state=e.state.value,
                status=V1_STATUS[e.state],
                message=e.message,
            )
            for e in events
        ],
    )
    return jsonify(body.model_dump())


_STATES_BY_NAME: dict[str, list[JobState]] = {s.value: [s] for s in JobState}
for _state, _status in V1_STATUS.items():
    _STATES_BY_NAME.setdefault(_status, []).append(_state)


def _query_states(values: list[str]) -> list[JobState]:
    states: list[JobState] = []
    for value in (v.strip() for item in values for v in item.split(",")):
        if value not in _STATES_BY_NAME:
            raise InvalidJobSpec(
                f"status {value!r} is not a v1 status nor a pman state",
                fields={"status": f"one of {', '.join(sorted(_STATES_BY_NAME))}"},
            )
        states.extend(_STATES_BY_NAME[value])
    return states


@v1.get("/jobs/", strict_slashes=False)
def list_jobs() -> Response:
    args = request.args
    labels: dict[str, str] = {}
    for item in args.getlist("label"):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidJobSpec("label must be key=value", fields={"label": "not key=value"})
        labels[key] = value
    try:
        limit = int(args.get("limit", "50"))
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidJobSpec(
            f"limit must be a whole number from 1 to {MAX_PAGE}", fields={"limit": "out of range"}
        )
    include_deleted = args.get("include_deleted", "false").lower() in ("1", "true", "yes")
    try:
        page = runtime().service.list(
            states=_query_states(args.getlist("status")) or None,
            auid=args.get("auid"),
            labels=labels,
            include_deleted=include_deleted,
            cursor=args.get("cursor"),
            limit=limit,
        )
    except ValueError as e:
        raise InvalidJobSpec(f"cursor: {e}", fields={"cursor": str(e)}) from e
    body = {"jobs": [summary_body(r) for r in page.records], "next_cursor": page.next_cursor}
    return jsonify(body)


@v1.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@health.get("/health")
def health_check() -> tuple[Response, int]:
    """200 only when both the engine and the job registry answer."""
    backend = runtime().backend
    try:
        backend.ping()
        runtime().service.registry.ping()
    except PmanError as e:
        body = schemas.Health(status="unavailable", backend=backend.describe(), message=e.message)
        return jsonify(body.model_dump()), 503
    body = schemas.Health(status="ok", backend=backend.describe(), message="the backend answers")
    return jsonify(body.model_dump()), 200
