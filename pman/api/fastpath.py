"""The poll path without Flask's per-request machinery.

``GET /api/v1/<jid>/`` is most of pman's traffic (every client polls every
job). This WSGI middleware answers it straight from the registry with the
same body the Flask route gives; every other request, and every poll that
ends in an error, goes to the Flask application unchanged, so errors keep one
set of handlers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from pman.api.observe import JID_KEY, ROUTE_KEY
from pman.api.pinning import RESOURCE_KEY
from pman.api.v1 import job_body
from pman.errors import InvalidJobSpec, PmanError
from pman.service import RESERVED_JIDS, JobService

_POLL = re.compile(r"/api/v1/([^/]+)/?")
#: the route template the poll is counted under, as the Flask route's
POLL_ROUTE = "/api/v1/{jid}/"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PollFastPath:
    def __init__(self, app: WSGIApp, service: JobService) -> None:
        self.app = app
        self.service = service

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET":
            m = _POLL.fullmatch(environ.get("PATH_INFO", ""))
            if m is not None and m.group(1) not in RESERVED_JIDS:
                data = self._poll(m.group(1).lstrip("/"), environ.get(RESOURCE_KEY))
                if data is not None:
                    environ[ROUTE_KEY] = POLL_ROUTE
                    environ[JID_KEY] = m.group(1)
                    start_response(
                        "200 OK",
                        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
                    )
                    return [data]
        return self.app(environ, start_response)

    def _poll(self, jid: str, pinned: str | None) -> bytes | None:
        try:
            self.service.check_name(jid)
            record, logs = self.service.status(jid, pinned=pinned)
        except (PmanError, InvalidJobSpec):
            return None  # the Flask route answers it, with the usual error handling
        # as Flask's jsonify writes it: compact, ASCII-escaped, a final newline
        text = json.dumps(job_body(record.info(), logs, record.resource), separators=(",", ":"))
        return (text + "\n").encode()
