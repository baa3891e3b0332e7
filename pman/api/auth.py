"""Who may use pman: bearer tokens, and pfcon-style JWTs for a username and password.

Every request except ``GET /health``, ``POST /api/v1/auth-token/`` and the
API's documentation (``GET /api/v1/openapi.json``, the docs page
``/api/v1/docs/`` and its files: no job data in them) must carry
``Authorization: Bearer <token>``, where the token is one of the static
tokens (PMAN_AUTH_TOKENS, PMAN_AUTH_TOKENS_FILE) or a JWT that
``/api/v1/auth-token/`` issued for PMAN_AUTH_USER / PMAN_AUTH_PASSWORD (HS256
with SECRET_KEY, valid PMAN_AUTH_TOKEN_LIFETIME seconds). The check is WSGI
middleware around the whole application, so no route, the poll fast path
included, can be reached without it. Secrets are compared in constant time
and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import jwt

from pman.api.pinning import split_prefix
from pman.errors import ConfigError
from pman.settings import Settings

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: reachable without credentials: the health probe, the login itself, and the
#: API's documentation (the OpenAPI document, the docs page; no job data)
OPEN_PATHS = frozenset(
    {
        ("GET", "/health"),
        ("POST", "/api/v1/auth-token/"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/docs"),
        ("GET", "/api/v1/docs/"),
    }
)
#: GET of one file name in this folder (the docs page's assets) is open too
OPEN_ASSETS = "/api/v1/docs/"
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
JWT_ALGORITHM = "HS256"
#: shortest static token or SECRET_KEY accepted in production
MIN_SECRET_LENGTH = 32
_AUDIENCE = "pman"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    """Checks bearer tokens and issues JWTs; built once per application."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth.mode != "none"
        # digests of equal length: compare_digest's time does not depend on the token
        self._tokens = [_digest(t) for t in settings.auth.all_tokens]
        self._user = settings.auth.user
        self._password = settings.auth.password
        self._key = settings.auth.secret_key or ""
        self.lifetime = settings.auth.token_lifetime

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The authenticator, or ConfigError when authentication would be off
        without the operator saying so (PMAN_AUTH=none)."""
        if settings.auth.mode == "none":
            log.warning(
                "AUTHENTICATION IS OFF (PMAN_AUTH=none): anyone who reaches this port "
                "can run any image as a job; use it only behind a trusted front"
            )
            return cls(settings)
        has_login = bool(settings.auth.user and settings.auth.password)
        if not settings.auth.all_tokens and not has_login:
            raise ConfigError(
                "no credentials configured: set PMAN_AUTH_TOKENS (or PMAN_AUTH_TOKENS_FILE), "
                "or PMAN_AUTH_USER and PMAN_AUTH_PASSWORD with a SECRET_KEY; or set "
                "PMAN_AUTH=none to serve without authentication",
                fields={"PMAN_AUTH": "no credentials configured"},
            )
        if has_login and not settings.auth.secret_key:
            raise ConfigError(
                "PMAN_AUTH_USER/PMAN_AUTH_PASSWORD need SECRET_KEY to sign the tokens they get",
                fields={"SECRET_KEY": "required with PMAN_AUTH_USER"},
            )
        if settings.core.application_mode == "production":
            problems = {}
            if any(len(t) < MIN_SECRET_LENGTH for t in settings.auth.all_tokens):
                problems["PMAN_AUTH_TOKENS"] = (
                    f"every token must have at least {MIN_SECRET_LENGTH} characters "
                    "in production (e.g. `openssl rand -hex 32`)"
                )
            if has_login and len(settings.auth.secret_key or "") < MIN_SECRET_LENGTH:
                problems["SECRET_KEY"] = (
                    f"must have at least {MIN_SECRET_LENGTH} characters in production"
                )
            if problems:
                lines = "; ".join(f"{k}: {v}" for k, v in problems.items())
                raise ConfigError(f"weak credentials: {lines}", fields=problems)
        return cls(settings)

    def check(self, header: str | None) -> str | None:
        """None if ``header`` (the Authorization value) admits the request, else
        the reason in a few words for the WWW-Authenticate header."""
        if not self.enabled:
            return None
        if not header:
            return ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "invalid_request"
        given = _digest(token)
        matched = False
        for known in self._tokens:  # no early exit: the time does not tell which matched
            matched |= hmac.compare_digest(given, known)
        if matched:
            return None
        # JWTs only where the login that issues them is configured
        if self.can_login and token.count(".") == 2:
            try:
                jwt.decode(
                    token,
                    self._key,
                    algorithms=[JWT_ALGORITHM],
                    audience=_AUDIENCE,
                    options={"require": ["exp", "iat", "sub"]},
                )
                return None
            except jwt.PyJWTError:
                pass
        return "invalid_token"

    def login(self, user: str, password: str) -> str | None:
        """A JWT for the configured user, or None if the credentials are wrong."""
        if not (self._user and self._password and self._key):
            return None
        ok_user = hmac.compare_digest(_digest(user), _digest(self._user))
        ok_password = hmac.compare_digest(_digest(password), _digest(self._password))
        if not (ok_user and ok_password):
            return None
        now = int(time.time())
        claims = {"sub": user, "aud": _AUDIENCE, "iat": now, "exp": now + self.lifetime}
        return jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM)

    @property
    def can_login(self) -> bool:
        return bool(self._user and self._password and self._key)


class AuthMiddleware:
    """Refuses every request without valid credentials with 401, before any route runs."""

    def __init__(self, app: WSGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not self.auth.enabled:
            return self.app(environ, start_response)
        # a resource's URL prefix (pman.api.pinning) opens the same routes
        path = split_prefix(environ.get("PATH_INFO", ""))[1]
        method = environ.get("REQUEST_METHOD", "")
        if (method, path) in OPEN_PATHS or (
            method == "GET"
            and path.startswith(OPEN_ASSETS)
            and _ASSET_NAME.fullmatch(path[len(OPEN_ASSETS) :])
            and ".." not in path
        ):
            return self.app(environ, start_response)
        problem = self.auth.check(environ.get("HTTP_AUTHORIZATION"))
        if problem is None:
            return self.app(environ, start_response)
        # nothing about the job or the route: the same answer for every path
        message = (
            "authentication required: send Authorization: Bearer <token>"
            if problem == ""
            else "invalid credentials"
        )
        challenge = 'Bearer realm="pman"' + (f', error="{problem}"' if problem else "")
        body = json.dumps({"message": message}).encode() + b"\n"
        start_response(
            "401 UNAUTHORIZED",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", challenge),
            ],
        )
        return [body]
