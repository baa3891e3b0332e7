"""Webhooks' settings, and the URL and host rules that the settings, the API
(a job's ``callback_url``) and the deliveries (pman.webhooks) share."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pman.settings.declare import Env, Problems, Section

#: the longest callback_url or PMAN_WEBHOOK_URL accepted
MAX_URL_LENGTH = 2048
#: shortest PMAN_WEBHOOK_SECRET accepted in production
MIN_WEBHOOK_SECRET_LENGTH = 32
WEBHOOK_FORMATS = ("json", "slack")


def check_webhook_url(text: str) -> str:
    """An http:// or https:// URL with a host, at most MAX_URL_LENGTH characters;
    ValueError saying what is wrong otherwise."""
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ValueError(f"not a URL: {e}") from e
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    return text


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """PMAN_WEBHOOK_ALLOWED_HOSTS: comma-separated ``*``, ``host`` or ``*.domain``."""
    hosts = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    for h in hosts:
        name = h.removeprefix("*.") if h != "*" else "x"
        if not name or "*" in name or "/" in name or any(c.isspace() for c in name):
            raise ValueError(f"{h!r} is not a host name, *.domain or *")
    return hosts


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``url``'s host is one ``allowed`` names."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class WebhookSettings(Section):
    """Webhooks: every state transition of a job POSTed and signed (see
    [Webhooks](../README.md#webhooks))."""

    title = "webhooks"

    url: Annotated[
        str | None,
        Env(
            "PMAN_WEBHOOK_URL",
            "the global webhook: every state transition of every job is POSTed to it (an "
            "`http://` or `https://` URL; needs `PMAN_WEBHOOK_SECRET`)",
            parse=check_webhook_url,
            form="URL",
            # a Slack URL is itself a credential
            secret=True,
        ),
    ] = None
    format: Annotated[
        str,
        Env(
            "PMAN_WEBHOOK_FORMAT",
            "the global hook's body: `json` (pman's payload) or `slack` (`{\"text\": "
            '"..."}`, one readable line, for a Slack-compatible incoming webhook); jobs\' '
            "callbacks always get `json`",
            choices=WEBHOOK_FORMATS,
        ),
    ] = "json"
    secret: Annotated[
        str | None,
        Env(
            "PMAN_WEBHOOK_SECRET",
            "the HMAC-SHA256 key signing every delivery (global and callbacks); required with "
            "`PMAN_WEBHOOK_URL`, and without it a POST with a `callback_url` is a 400; at "
            f"least {MIN_WEBHOOK_SECRET_LENGTH} characters in production",
            secret=True,
            blank_is_unset=True,
        ),
    ] = None
    allowed_hosts: Annotated[
        tuple[str, ...],
        Env(
            "PMAN_WEBHOOK_ALLOWED_HOSTS",
            "comma-separated hosts a job's `callback_url` may name: `*` (any), `name`, or "
            "`*.domain`; anything else is a 400. **The default lets any client make pman POST "
            "to any address it can reach** (internal services included): set it where "
            "clients are not trusted as much as pman's network position",
            parse=parse_allowed_hosts,
        ),
    ] = ("*",)
    max_attempts: Annotated[
        int,
        Env(
            "PMAN_WEBHOOK_MAX_ATTEMPTS",
            "attempts per delivery before it is marked `failed` and logged",
            ge=1,
            le=100,
        ),
    ] = 10
    backoff_base: Annotated[
        float,
        Env(
            "PMAN_WEBHOOK_BACKOFF_BASE",
            "seconds before the first retry; doubled after each failed attempt, with jitter "
            "(x0.5 to x1)",
            ge=0.01,
            le=3600,
        ),
    ] = 1.0
    backoff_cap: Annotated[
        float,
        Env(
            "PMAN_WEBHOOK_BACKOFF_CAP",
            "the longest wait between two attempts, in seconds",
            ge=0.01,
            le=86400,
        ),
    ] = 300.0
    timeout: Annotated[
        float,
        Env(
            "PMAN_WEBHOOK_TIMEOUT",
            "seconds one attempt may take (connect and answer)",
            ge=0.1,
            le=300,
        ),
    ] = 10.0

    def check(self, application_mode: str | None, problems: Problems) -> None:
        if self.url and not self.secret:
            problems.add(
                "PMAN_WEBHOOK_SECRET", "required with PMAN_WEBHOOK_URL (it signs every delivery)"
            )
        elif (
            self.secret
            and application_mode == "production"
            and len(self.secret) < MIN_WEBHOOK_SECRET_LENGTH
        ):
            problems.add(
                "PMAN_WEBHOOK_SECRET",
                f"must have at least {MIN_WEBHOOK_SECRET_LENGTH} characters in production "
                "(e.g. `openssl rand -hex 32`)",
            )
