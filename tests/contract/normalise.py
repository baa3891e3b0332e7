"""What of an answer is recorded, with what always differs between two runs
replaced by a placeholder.

Replaced, and why (nothing else is):

* times: ``timestamp``, ``at``, ``submitted_at``, ``started_at``,
  ``finished_at``, ``deleted_at``, ``created_at``, ``next_attempt_at`` become
  ``<time>`` (null and "" stay as they are: whether a time is set is part of
  the contract), and a webhook's ``X-Pman-Timestamp``;
* ids made afresh by every run: a login's JWT, a list's ``next_cursor`` (it
  holds a record id and a time), a webhook's ``event_id`` (instance and outbox
  row), the ``X-Request-ID`` pman makes when the client sent none, a webhook's
  signature (it signs a time);
* where the run happens: the server's URL (its port) and its temporary
  folder (STOREBASE and PMAN_DATA_DIR), wherever they appear in a text;
* the release: ``server_version``, the OpenAPI document's ``info.version`` and
  a webhook's ``User-Agent`` carry pman's version, which a release changes by
  design (4.0.0 and the code after it both say 4.0.0 as this is written).

Headers kept: those a client acts on (below; the methods of ``Allow`` sorted:
werkzeug writes that set in an order that changes per process); not Date, Server,
Content-Length or Transfer-Encoding, which belong to the HTTP server.
The Swagger UI files are recorded by status and type only: their bytes are
flask-swagger-ui's, not pman's. /metrics by the names of its metric families
only: its values are counts and times of this one run.
"""

from __future__ import annotations

import json
import re
from typing import Any

import requests

#: response headers a client acts on
HEADERS = (
    "Content-Type",
    "Retry-After",
    "WWW-Authenticate",
    "Location",
    "Allow",
    "Cache-Control",
    "X-Accel-Buffering",
    "X-Request-ID",
)
TIME_KEYS = frozenset(
    {
        "timestamp",
        "at",
        "submitted_at",
        "started_at",
        "finished_at",
        "deleted_at",
        "created_at",
        "next_attempt_at",
    }
)
#: keys whose values are made afresh by every run
ID_KEYS = {"token": "<jwt>", "next_cursor": "<cursor>", "event_id": "<event-id>"}
VERSION_KEYS = frozenset({"server_version"})
_FAMILY = re.compile(r"^# TYPE (\S+) ", re.MULTILINE)


class Placeholders:
    """The texts of one run that become placeholders: its URL, its folder."""

    def __init__(self, url: str, workdir: str) -> None:
        self.subs = [(real, ph) for real, ph in ((url, "<url>"), (workdir, "<workdir>")) if real]

    def text(self, value: str) -> str:
        for real, placeholder in self.subs:
            value = value.replace(real, placeholder)
        return value

    def json(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: self.json(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if value in (None, ""):
            return value
        if key in TIME_KEYS:
            return "<time>"
        if key in ID_KEYS:
            return ID_KEYS[key]
        if key in VERSION_KEYS:
            return "<version>"
        if isinstance(value, str):
            return self.text(value)
        return value


def response_record(
    resp: requests.Response, ph: Placeholders, body: str = "full", request_id: str | None = None
) -> dict[str, Any]:
    """The recorded part of an answer. ``body``: "full", "families" (/metrics),
    "none" (a file of a third party's); ``request_id``: the X-Request-ID the
    client sent, which must come back as it is."""
    headers: dict[str, str] = {}
    for name in HEADERS:
        value = resp.headers.get(name)
        if value is None:
            continue
        if name == "X-Request-ID":
            value = "<echoed>" if value == request_id else "<generated>"
        elif name == "Allow":
            # a set: werkzeug lists it in its hash order, which changes per process
            value = ", ".join(sorted(m.strip() for m in value.split(",")))
        headers[name] = ph.text(value)
    return {"status": resp.status_code, "headers": headers, "body": body_record(resp, ph, body)}


def body_record(resp: requests.Response, ph: Placeholders, how: str) -> Any:
    if how == "none":
        return None
    ctype = resp.headers.get("Content-Type", "")
    if how == "families":
        return sorted(set(_FAMILY.findall(resp.text)))
    if ctype.startswith("application/json"):
        try:
            data = resp.json()
        except ValueError:
            return {"not JSON": ph.text(resp.text)}
        if isinstance(data, dict) and isinstance(data.get("info"), dict) and "openapi" in data:
            data["info"]["version"] = "<version>"
        return ph.json(data)
    return ph.text(resp.text)


def webhook_record(headers: dict[str, str], body: bytes, verified: bool) -> dict[str, Any]:
    """One webhook POST as a receiver got it."""
    got = {k.lower(): v for k, v in headers.items()}
    data = json.loads(body)
    return {
        "content-type": got.get("content-type"),
        "user-agent": re.sub(r"/\S+$", "/<version>", got.get("user-agent", "")),
        "signature verified": verified,
        "event id header is the body's": got.get("x-pman-event-id") == data.get("event_id"),
        "has timestamp header": "x-pman-timestamp" in got,
        "body": Placeholders("", "").json(data),
    }
