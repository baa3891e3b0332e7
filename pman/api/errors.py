"""The one place where pman's exceptions become HTTP statuses."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from pman.api.lanes import RETRY_AFTER_S
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
)

log = logging.getLogger(__name__)

#: most specific first
STATUS_OF: list[tuple[type[PmanError], int]] = [
    (InvalidJobSpec, 400),  # includes UnsupportedOption
    (JobNotFound, 404),
    (JobExists, 409),
    (BackendUnavailable, 503),
    (BackendError, 502),
]


def status_for(error: PmanError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(error, cls):
            return status
    return 500


def error_response(status: int, message: str, fields: dict[str, str] | None = None) -> Response:
    body: dict[str, object] = {"message": message}
    if fields:
        body["fields"] = fields
    resp = jsonify(body)
    resp.status_code = status
    return resp


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(PmanError)
    def _pman_error(e: PmanError) -> Response:
        status = status_for(e)
        if status >= 500:
            log.error("%s: %s", type(e).__name__, e.message)
        resp = error_response(status, e.message, e.fields)
        if status == 503:
            # the engine or the registry may answer again soon: nothing was done
            resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e: RequestEntityTooLarge) -> Response:
        limit = current_app.config.get("PMAN_MAX_REQUEST_BYTES")
        return error_response(
            413,
            f"the request body is larger than this pman accepts ({limit} bytes, "
            "PMAN_MAX_REQUEST_BYTES)",
            {"body": f"over {limit} bytes"},
        )

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        resp = error_response(e.code or 500, e.description or e.name)
        for key in ("Allow", "Location"):
            if e.get_response().headers.get(key):
                resp.headers[key] = e.get_response().headers[key]
        return resp

    @app.errorhandler(Exception)
    def _bug(e: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal error in pman; the server log has the details")
