"""The v1 HTTP API, wire-compatible with upstream FNNDSC/pman."""

from __future__ import annotations

import logging
import shlex
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError

from pman.api import schemas
from pman.api.context import runtime
from pman.api.openapi import openapi_document
from pman.errors import InvalidJobSpec, JobExists, JobNotFound, PmanError
from pman.jobs import build_spec
from pman.models import JobInfo, JobRequest, JobState

log = logging.getLogger(__name__)

v1 = Blueprint("v1", __name__, url_prefix="/api/v1")
health = Blueprint("health", __name__)

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


def job_body(info: JobInfo, logs: str) -> dict[str, Any]:
    ts = info.timestamp
    return schemas.Job(
        jid=info.name,
        image=info.image,
        cmd=shlex.join(info.command),
        status=V1_STATUS[info.state],
        message=info.message,
        timestamp=ts.isoformat() if ts else "",
        logs=logs,
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
    rt = runtime()
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise InvalidJobSpec("the request body must be a JSON object", fields={"body": "not JSON"})
    try:
        model = schemas.JobRequest.model_validate(body)
    except ValidationError as e:
        raise _validation_error(e) from None
    rt.backend.check_name(model.jid)
    spec = build_spec(JobRequest(**model.model_dump()), rt.settings, rt.storage)
    rt.storage.prepare_output(spec.mounts)
    try:
        info = rt.backend.submit(spec)
    except JobExists as e:
        if e.existing is not None and e.existing.fingerprint == spec.fingerprint:
            log.info("job %s resubmitted with the same request: returning it", spec.name)
            return jsonify(job_body(e.existing, "")), 200
        raise JobExists(
            f"job {spec.name!r} exists already with a different request; "
            "delete it first or use another jid"
        ) from e
    log.info("job %s submitted to %s", spec.name, rt.backend.describe())
    return jsonify(job_body(info, "")), 201


def _job_name(jid: str) -> str:
    """The jid of a URL; one the engine could never have accepted is simply unknown
    (and never reaches the backend, where it might be a path)."""
    jid = jid.lstrip("/")
    try:
        runtime().backend.check_name(jid)
    except InvalidJobSpec:
        raise JobNotFound(f"no job named {jid!r}") from None
    return jid


@v1.get("/<string:jid>/", strict_slashes=False)
def get_job(jid: str) -> Response:
    rt = runtime()
    jid = _job_name(jid)
    info = rt.backend.get(jid)
    logs = rt.backend.logs(jid, rt.settings.job_logs_tail)
    return jsonify(job_body(info, logs))


@v1.delete("/<string:jid>/", strict_slashes=False)
def delete_job(jid: str) -> tuple[str, int]:
    rt = runtime()
    jid = _job_name(jid)
    rt.backend.get(jid)
    if rt.settings.remove_jobs:
        rt.backend.delete(jid)
        log.info("job %s deleted", jid)
    else:
        log.info("job %s not deleted: REMOVE_JOBS=no", jid)
    return "", 204


@v1.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@health.get("/health")
def health_check() -> tuple[Response, int]:
    backend = runtime().backend
    try:
        backend.ping()
    except PmanError as e:
        body = schemas.Health(status="unavailable", backend=backend.describe(), message=e.message)
        return jsonify(body.model_dump()), 503
    body = schemas.Health(status="ok", backend=backend.describe(), message="the backend answers")
    return jsonify(body.model_dump()), 200
