"""URL pinning: ``/<resource>/api/v1/...`` is the v1 API of that compute
resource alone, for clients that cannot send ``compute_resource`` (pfcon).

A WSGI middleware strips the prefix of a configured resource and puts its
name into the environ (RESOURCE_KEY), where the routes read it; a prefix
that names no resource is answered 404 here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any

#: the environ key of the resource the URL pins (absent: none)
RESOURCE_KEY = "pman.resource"
#: the environ key of a pinned request's path as it came (the access log shows it)
PINNED_PATH_KEY = "pman.pinned_path"

#: a resource's prefix before the API's own path (names: lowercase DNS labels)
PREFIXED = re.compile(r"/([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(/api/v1(?:/.*)?)")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def split_prefix(path: str) -> tuple[str | None, str]:
    """(the resource a path names, the path without it); (None, path) when it
    names none."""
    m = PREFIXED.fullmatch(path)
    if m is None:
        return None, path
    return m.group(1), m.group(3)


def pinned(environ: dict[str, Any]) -> str | None:
    """The resource the request's URL pins, if any."""
    return environ.get(RESOURCE_KEY)


class ResourcePrefix:
    """Serves ``/<resource>/api/v1/...`` as ``/api/v1/...`` pinned to that resource."""

    def __init__(self, app: WSGIApp, names: Collection[str]) -> None:
        self.app = app
        self.names = frozenset(names)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        name, rest = split_prefix(environ.get("PATH_INFO", ""))
        if name is not None:
            if name not in self.names:
                body = json.dumps(
                    {"message": f"no compute resource named {name!r} (its URL prefix /{name}/)"}
                ).encode()
                start_response(
                    "404 NOT FOUND",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                return [body]
            environ[RESOURCE_KEY] = name
            environ[PINNED_PATH_KEY] = environ["PATH_INFO"]
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + name
            environ["PATH_INFO"] = rest
        return self.app(environ, start_response)
