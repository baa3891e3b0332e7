"""The v1 HTTP API, wire-compatible with upstream FNNDSC/pman, plus the
registry's list and events."""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from pman import models
from pman.api import schemas
from pman.api.context import runtime
from pman.api.errors import error_response
from pman.api.lanes import DEADLINE_KEY, LOG_STREAM_KEY
from pman.api.openapi import openapi_document
from pman.api.pinning import RESOURCE_KEY
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
V1_STATUS: dict[JobState, schemas.JobStatus] = models.V1_STATUS  # type: ignore[assignment]
MAX_PAGE = 500


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def job_body(info: JobInfo, logs: str, resource: str) -> dict[str, Any]:
    """The v1 job body (schemas.Job; built as a dict: it is on the poll path);
    ``resource``: the job's compute resource (a field added to upstream's)."""
    return {
        "jid": info.name,
        "image": info.image,
        "cmd": shlex.join(info.command),
        "status": V1_STATUS[info.state],
        "message": info.message,
        "timestamp": _iso(info.timestamp) or "",
        "logs": logs,
        "compute_resource": resource,
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
        compute_resource=r.resource,
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
        runtime().service.check_name(jid)
    except InvalidJobSpec:
        raise JobNotFound(f"no job named {jid!r}") from None
    return jid


def _json_body() -> Any:
    """The request's JSON, read no further than PMAN_MAX_REQUEST_BYTES (413
    beyond), whatever the Content-Type (upstream clients do not always say); None
    when it is not JSON."""
    data = request.get_data(cache=True)
    if len(data) > runtime().settings.server.max_request_bytes:
        raise RequestEntityTooLarge()
    try:
        return json.loads(data)
    except ValueError:
        return None


def _pinned() -> str | None:
    """The compute resource the URL pins (/<resource>/api/v1/), if any."""
    return request.environ.get(RESOURCE_KEY)


@v1.get("/")
def server_info() -> Response:
    s = runtime().settings
    resource = s.resource_named(_pinned() or "") or s.resource
    info = schemas.ServerInfo(
        server_version=s.server_version,
        container_env=resource.container_env,
        storage_type=resource.storage.storage_type,
    )
    return jsonify(info.model_dump())


@v1.post("/")
def submit_job() -> tuple[Response, int]:
    body = _json_body()
    if not isinstance(body, dict):
        raise InvalidJobSpec("the request body must be a JSON object", fields={"body": "not JSON"})
    try:
        model = schemas.JobRequest.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from None
    fields = model.model_dump()
    wanted = fields.pop("compute_resource")
    done = runtime().service.submit(
        JobRequest(**fields),
        deadline=request.environ.get(DEADLINE_KEY),
        pinned=_pinned(),
        compute_resource=wanted,
    )
    body = job_body(done.record.info(), "", done.record.resource)
    return jsonify(body), 201 if done.created else 200


@v1.post("/auth-token/")
def auth_token() -> Response:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise InvalidJobSpec("the request body must be a JSON object", fields={"body": "not JSON"})
    try:
        login = schemas.AuthTokenRequest.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from None
    token = runtime().authenticator.login(login.pman_user, login.pman_password)
    if token is None:
        resp = error_response(401, "invalid credentials")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="pman"'
        return resp
    return jsonify(schemas.AuthToken(token=token).model_dump())


@v1.get("/<jid:jid>/", strict_slashes=False)
def get_job(jid: str) -> Response:
    record, logs = runtime().service.status(_job_name(jid), pinned=_pinned())
    return jsonify(job_body(record.info(), logs, record.resource))


@v1.delete("/<jid:jid>/", strict_slashes=False)
def delete_job(jid: str) -> tuple[str, int]:
    runtime().service.delete(_job_name(jid), pinned=_pinned())
    return "", 204


@v1.post("/<jid:jid>/cancel/", strict_slashes=False)
def cancel_job(jid: str) -> Response:
    record = runtime().service.cancel(_job_name(jid), pinned=_pinned())
    return jsonify(job_body(record.info(), record.logs or "", record.resource))


_TAIL = re.compile(r"\d{1,9}")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def _logs_query() -> tuple[int | None, datetime | None, bool]:
    """tail, since and follow of a logs request; InvalidJobSpec naming a bad one."""
    args = request.args
    tail = None
    if "tail" in args:
        if not _TAIL.fullmatch(args["tail"]):
            raise InvalidJobSpec(
                "tail must be a whole number of lines >= 0",
                fields={"tail": "not a whole number >= 0"},
            )
        tail = int(args["tail"])
    since = None
    if "since" in args:
        try:
            since = datetime.fromisoformat(args["since"])
        except ValueError:
            raise InvalidJobSpec(
                "since must be an ISO 8601 time, e.g. 2026-01-02T03:04:05Z",
                fields={"since": "not an ISO 8601 time"},
            ) from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    follow = args.get("follow", "false").lower()
    if follow not in _TRUE + _FALSE:
        raise InvalidJobSpec("follow must be true or false", fields={"follow": "not true or false"})
    return tail, since, follow in _TRUE


def _logged(jid: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks as they come; a failure half-way is logged and ends the
    response abruptly (no final chunk), so the client knows it is incomplete.
    Closing this generator (the client went away) closes the engine's stream."""
    try:
        # an empty first chunk makes WSGI servers that wait for body data
        # (gunicorn) send the status line at once, before a silent job writes
        yield b""
        yield from chunks
    except PmanError as e:
        log.error("job %s: the log stream failed: %s", jid, e.message)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


@v1.get("/<jid:jid>/logs/", strict_slashes=False)
def job_logs(jid: str) -> Response:
    name = _job_name(jid)
    tail, since, follow = _logs_query()
    chunks = runtime().service.logs(name, tail=tail, since=since, follow=follow, pinned=_pinned())
    # the server ends it from outside when its client goes or it stays silent
    request.environ[LOG_STREAM_KEY] = chunks
    resp = Response(_logged(name, chunks), content_type="text/plain; charset=utf-8")
    # proxies must pass a followed log on as it comes
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp


@v1.get("/<jid:jid>/events/", strict_slashes=False)
def job_events(jid: str) -> Response:
    record, events = runtime().service.events(_job_name(jid), pinned=_pinned())
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
        compute_resource=record.resource,
    )
    return jsonify(body.model_dump())


@v1.get("/<jid:jid>/webhooks/", strict_slashes=False)
def job_webhooks(jid: str) -> Response:
    record, deliveries = runtime().service.deliveries(_job_name(jid), pinned=_pinned())
    instance = runtime().settings.registry.instance
    body = schemas.WebhookDeliveries(
        jid=record.jid,
        deliveries=[
            schemas.WebhookDelivery(
                event_id=f"{instance}-{d.event_id}",
                event_state=d.payload["state"],
                target=d.target,  # type: ignore[arg-type]
                # the global URL is the operator's (a Slack URL is a credential)
                url=d.url if d.target == "callback" else None,
                state=d.state,  # type: ignore[arg-type]
                attempts=d.attempts,
                last_error=d.last_error,
                created_at=d.created_at.isoformat(),
                next_attempt_at=_iso(d.next_attempt_at) if d.state == "pending" else None,
                finished_at=_iso(d.finished_at),
            )
            for d in deliveries
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
    resources = _query_resources(args.getlist("compute_resource"))
    try:
        page = runtime().service.list(
            states=_query_states(args.getlist("status")) or None,
            auid=args.get("auid"),
            labels=labels,
            include_deleted=include_deleted,
            cursor=args.get("cursor"),
            limit=limit,
            resources=resources,
        )
    except ValueError as e:
        raise InvalidJobSpec(f"cursor: {e}", fields={"cursor": str(e)}) from e
    body = {"jobs": [summary_body(r) for r in page.records], "next_cursor": page.next_cursor}
    return jsonify(body)


def _query_resources(values: list[str]) -> list[str] | None:
    """The resources a list is filtered to (``compute_resource``, repeatable or
    comma-separated), within the URL's pinned one; None: every resource."""
    names = [v.strip() for item in values for v in item.split(",") if v.strip()] or None
    pinned = _pinned()
    if pinned is None:
        return names
    return [pinned] if names is None or pinned in names else []


@v1.get("/resources/", strict_slashes=False)
def list_resources() -> Response:
    """The compute resources (the URL's alone when pinned), in PMAN_RESOURCES order."""
    described = runtime().service.describe_resources(pinned=_pinned())
    body = schemas.ComputeResources.model_validate({"resources": described})
    return jsonify(body.model_dump())


@v1.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@health.get("/health")
def health_check() -> tuple[Response, int]:
    """200 only when both the engine and the job registry answer; an engine
    that hangs is reported within a few seconds (JobService.health)."""
    service = runtime().service
    report = service.health_report()
    backend = service.describe_backend()
    resources = {
        name: schemas.ResourceHealth(
            backend=service.by_name[name].backend.name, healthy=problem is None, problem=problem
        )
        for name, problem in report.resources.items()
    }
    if report.problem is not None:
        body = schemas.Health(
            status="unavailable", backend=backend, message=report.problem, resources=resources
        )
        return jsonify(body.model_dump()), 503
    down = [name for name, problem in report.resources.items() if problem is not None]
    message = "the backend answers"
    if down:
        message = f"the backend answers; compute resource(s) down: {', '.join(down)}"
    body = schemas.Health(status="ok", backend=backend, message=message, resources=resources)
    return jsonify(body.model_dump()), 200
