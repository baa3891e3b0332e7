"""Every request observed: its id, its metrics, its access-log line; and /metrics.

:class:`RequestObserver` is the outermost WSGI middleware, around
authentication and the poll fast path, so 401s and polls are counted, timed
and given an ``X-Request-ID`` like every other answer. The request id is the
client's ``X-Request-ID`` when it is sane (1-128 letters, digits and
``._:-``), else a new one; every log line written while the request is
answered carries it (pman.telemetry's context variables), and so does the
response. Metrics are labelled with the route's template (``/api/v1/{jid}/``),
never the raw path, so a jid never becomes a label value.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from werkzeug.routing import Map

from pman import metrics
from pman.api.context import runtime
from pman.api.pinning import PINNED_PATH_KEY
from pman.telemetry import ACCESS_LOGGER, JID, REQUEST_ID

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: the environ keys where the route's template and the jid are left for the observer
ROUTE_KEY = "pman.route"
JID_KEY = "pman.jid"
#: a request that matched no route (404, 405)
UNMATCHED = "unmatched"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")

access_log = logging.getLogger(ACCESS_LOGGER)
#: new request ids: a random prefix per process and a counter (unique without
#: a system call per request: this is on the poll path)
_id_prefix = ""
_id_counter = itertools.count(1)
_id_pid = 0


def new_request_id() -> str:
    global _id_prefix, _id_pid, _id_counter
    pid = os.getpid()
    if pid != _id_pid:  # a new process (a forked worker): a prefix of its own
        _id_prefix, _id_pid, _id_counter = os.urandom(10).hex(), pid, itertools.count(1)
    return f"{_id_prefix}{next(_id_counter):012x}"


ops = Blueprint("ops", __name__)


def route_template(rule: str) -> str:
    """Flask's ``/api/v1/<string:jid>/`` as OpenAPI's ``/api/v1/{jid}/``."""
    return _CONVERTER.sub(r"{\1}", rule)


class RequestObserver:
    def __init__(self, app: WSGIApp, url_map: Map, access_log_on: bool) -> None:
        self.app = app
        self.url_map = url_map
        self.access_log_on = access_log_on

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        given = environ.get("HTTP_X_REQUEST_ID")
        rid = given if given and _SANE_ID.fullmatch(given) else new_request_id()
        rid_token = REQUEST_ID.set(rid)
        jid_token = JID.set("")
        started = time.perf_counter()
        status: list[str] = []

        def observed_start(
            code: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[..., Any]:
            status[:] = [code]
            headers.append(("X-Request-ID", rid))
            return start_response(code, headers, exc_info)

        try:
            return self.app(environ, observed_start)
        finally:
            elapsed = time.perf_counter() - started
            code = status[0][:3] if status else "500"
            try:
                self._record(environ, code, elapsed)
            finally:
                JID.reset(jid_token)
                REQUEST_ID.reset(rid_token)

    def _record(self, environ: dict[str, Any], code: str, elapsed: float) -> None:
        method = environ.get("REQUEST_METHOD", "")
        if method not in _METHODS:
            method = "other"
        route = environ.get(ROUTE_KEY) or self._match(environ)
        metrics.REQUESTS.observe(method, route, code, elapsed)
        if self.access_log_on:
            self._log(environ, method, route, code, elapsed)

    def _log(
        self, environ: dict[str, Any], method: str, route: str, code: str, elapsed: float
    ) -> None:
        path = (environ.get(PINNED_PATH_KEY) or environ.get("PATH_INFO", ""))[:256]
        ms = round(elapsed * 1000, 2)
        # the jid the route was about (its handler's context has ended)
        jid = environ.get(JID_KEY)
        token = JID.set(jid) if jid else None
        try:
            access_log.info(
                "%s %s %s %.2f ms",
                method,
                path,
                code,
                ms,
                extra={
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": int(code) if code.isdigit() else code,
                    "duration_ms": ms,
                    "remote": environ.get("REMOTE_ADDR"),
                },
            )
        finally:
            if token is not None:
                JID.reset(token)

    def _match(self, environ: dict[str, Any]) -> str:
        """The route of a request that no handler labelled (a 401, a 404)."""
        try:
            rule, _ = self.url_map.bind_to_environ(environ).match(return_rule=True)
        except Exception:  # NotFound, MethodNotAllowed, a redirect: no route of ours
            return UNMATCHED
        return route_template(rule.rule)


def install(app: Flask) -> None:
    """Label each request Flask routes with its template and its jid (for the
    log lines written while it is answered, and the access line after)."""

    @app.before_request
    def _label() -> None:
        rule = request.url_rule
        if rule is not None:
            request.environ[ROUTE_KEY] = route_template(rule.rule)
        jid = (request.view_args or {}).get("jid")
        if isinstance(jid, str):
            request.environ[JID_KEY] = jid.lstrip("/")
            g.pman_jid_token = JID.set(jid.lstrip("/"))

    @app.teardown_request
    def _unlabel(_: BaseException | None) -> None:
        token = g.pop("pman_jid_token", None)
        if token is not None:
            JID.reset(token)


@ops.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus' text format; needs credentials like every other endpoint."""
    rt = runtime()
    body = metrics.render(rt.service.registry, rt.service.resource_backends())
    return Response(body, status=200, content_type=metrics.CONTENT_TYPE)
