"""Who may call pman: bearer tokens, the login and the key that signs its JWTs
(checked for strength when the service starts, pman.api.auth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pman.settings.declare import Env, Section

AUTH_MODES = ("token", "none")


def parse_tokens(text: str) -> tuple[str, ...]:
    """PMAN_AUTH_TOKENS: comma-separated bearer tokens."""
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    for t in tokens:
        if any(c.isspace() or not c.isprintable() for c in t):
            raise ValueError("a token must not contain spaces or control characters")
    return tokens


def read_tokens_file(path: str) -> tuple[str, ...]:
    """PMAN_AUTH_TOKENS_FILE: one token per line; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e
    lines = [line.strip() for line in text.splitlines()]
    return parse_tokens(",".join(line for line in lines if line and not line.startswith("#")))


class AuthSettings(Section):
    """Authentication (see [Security](../README.md#security))."""

    title = "auth"

    mode: Annotated[
        str,
        Env(
            "PMAN_AUTH",
            "`token`: every request but `GET /health` and the login needs `Authorization: "
            "Bearer <token>`, and pman refuses to start without credentials; `none`: no "
            "authentication (a warning at each start; only behind a front that authenticates)",
            choices=AUTH_MODES,
        ),
    ] = "token"
    tokens: Annotated[
        tuple[str, ...],
        Env(
            "PMAN_AUTH_TOKENS",
            "comma-separated bearer tokens clients may send (at least 32 characters each in "
            "production)",
            parse=parse_tokens,
            form="comma-separated tokens",
            secret=True,
        ),
    ] = ()
    file_tokens: Annotated[
        tuple[str, ...],
        Env(
            "PMAN_AUTH_TOKENS_FILE",
            "a file of tokens, one per line (`#` comments), e.g. a mounted secret; added to "
            "`PMAN_AUTH_TOKENS`",
            parse=read_tokens_file,
            form="path",
            secret=True,
        ),
    ] = ()
    user: Annotated[
        str | None,
        Env(
            "PMAN_AUTH_USER",
            'the user of the login `POST /api/v1/auth-token/` (`{"pman_user", '
            '"pman_password"}`), which issues a JWT; needs `SECRET_KEY`',
        ),
    ] = None
    password: Annotated[
        str | None,
        Env("PMAN_AUTH_PASSWORD", "that user's password", secret=True),
    ] = None
    token_lifetime: Annotated[
        int,
        Env(
            "PMAN_AUTH_TOKEN_LIFETIME",
            "seconds a JWT from the login stays valid (60 s to 30 days)",
            ge=60,
            le=30 * 86400,
        ),
    ] = 3600
    secret_key: Annotated[
        str | None,
        Env(
            "SECRET_KEY",
            "signs the login's JWTs (HS256; at least 32 characters in production) and "
            "Flask's sessions",
            secret=True,
        ),
    ] = None

    @property
    def all_tokens(self) -> tuple[str, ...]:
        """The bearer tokens of PMAN_AUTH_TOKENS, then those of PMAN_AUTH_TOKENS_FILE."""
        return self.tokens + self.file_tokens
