"""Authentication: which settings start pman, which credentials pass, and that
secrets are neither accepted loosely nor shown."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jwt
import pytest
from flask.testing import FlaskClient

from pman.api.auth import Authenticator
from pman.app import create_app
from pman.errors import ConfigError
from pman.settings import load_settings
from tests.unit.conftest import make_settings
from tests.unit.fakes import FakeBackend

TOKEN = "t" * 40
KEY = "k" * 40


def settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    environ = {
        "STOREBASE": str(tmp_path),
        "PMAN_DATA_DIR": str(tmp_path / "data"),
        "PMAN_TRACKER": "off",
        **env,
    }
    return load_settings(environ)


def client(tmp_path: Path, **env: str) -> FlaskClient:
    storebase = tmp_path / "sb"
    storebase.mkdir(exist_ok=True)
    app = create_app(make_settings(storebase, tmp_path, **env), backend=FakeBackend())
    return app.test_client()


def test_no_credentials_refuses_to_start_in_either_mode(tmp_path: Path) -> None:
    for mode in ("production", "development"):
        with pytest.raises(ConfigError, match="PMAN_AUTH=none") as e:
            Authenticator.from_settings(settings(tmp_path, APPLICATION_MODE=mode))
        assert "PMAN_AUTH" in e.value.fields


def test_auth_off_only_when_said_in_words_and_warned_each_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        auth = Authenticator.from_settings(settings(tmp_path, PMAN_AUTH="none"))
    assert not auth.enabled and auth.check(None) is None
    assert "AUTHENTICATION IS OFF" in caplog.text
    with pytest.raises(ConfigError):
        settings(tmp_path, PMAN_AUTH="off")  # not one of the words


def test_weak_secrets_refused_in_production_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32") as e:
        Authenticator.from_settings(settings(tmp_path, PMAN_AUTH_TOKENS="short"))
    assert "PMAN_AUTH_TOKENS" in e.value.fields
    with pytest.raises(ConfigError, match="at least 32") as e:
        Authenticator.from_settings(
            settings(tmp_path, PMAN_AUTH_USER="u", PMAN_AUTH_PASSWORD="p", SECRET_KEY="weak")
        )
    assert "SECRET_KEY" in e.value.fields
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Authenticator.from_settings(settings(tmp_path, PMAN_AUTH_USER="u", PMAN_AUTH_PASSWORD="p"))
    dev = settings(tmp_path, PMAN_AUTH_TOKENS="short", APPLICATION_MODE="development")
    assert Authenticator.from_settings(dev).check("Bearer short") is None


def test_tokens_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# pfcon\n{TOKEN}\n\n{'u' * 40}\n")
    auth = Authenticator.from_settings(settings(tmp_path, PMAN_AUTH_TOKENS_FILE=str(path)))
    assert auth.check(f"Bearer {TOKEN}") is None
    assert auth.check(f"Bearer {'u' * 40}") is None
    assert auth.check("Bearer # pfcon") == "invalid_token"
    with pytest.raises(ConfigError) as e:
        settings(tmp_path, PMAN_AUTH_TOKENS_FILE=str(tmp_path / "missing"))
    assert "PMAN_AUTH_TOKENS_FILE" in e.value.fields


def test_only_exact_bearer_tokens_pass(tmp_path: Path) -> None:
    auth = Authenticator.from_settings(settings(tmp_path, PMAN_AUTH_TOKENS=f"{TOKEN},{'v' * 40}"))
    assert auth.check(f"Bearer {TOKEN}") is None
    assert auth.check(f"bearer {'v' * 40}") is None  # the scheme is case-insensitive
    assert auth.check(None) == ""
    assert auth.check("") == ""
    for bad in (f"Basic {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer ", TOKEN):
        assert auth.check(bad) is not None, bad


def test_jwt_login_expiry_and_forgery(tmp_path: Path) -> None:
    auth = Authenticator.from_settings(
        settings(tmp_path, PMAN_AUTH_USER="chris", PMAN_AUTH_PASSWORD="pw", SECRET_KEY=KEY)
    )
    assert auth.login("chris", "wrong") is None
    assert auth.login("chri", "pw") is None
    token = auth.login("chris", "pw")
    assert token is not None and auth.check(f"Bearer {token}") is None
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience="pman")
    assert claims["exp"] - claims["iat"] == 3600
    now = int(time.time())
    expired = jwt.encode({"sub": "chris", "aud": "pman", "iat": now - 7200, "exp": now - 3600}, KEY)
    assert auth.check(f"Bearer {expired}") == "invalid_token"
    other_key = jwt.encode({"sub": "chris", "aud": "pman", "iat": now, "exp": now + 60}, "x" * 40)
    assert auth.check(f"Bearer {other_key}") == "invalid_token"
    unsigned = jwt.encode(
        {"sub": "chris", "aud": "pman", "iat": now, "exp": now + 60}, None, "none"
    )
    assert auth.check(f"Bearer {unsigned}") == "invalid_token"
    no_exp = jwt.encode({"sub": "chris", "aud": "pman", "iat": now}, KEY)
    assert auth.check(f"Bearer {no_exp}") == "invalid_token"


def test_no_jwt_accepted_without_a_configured_login(tmp_path: Path) -> None:
    auth = Authenticator.from_settings(settings(tmp_path, PMAN_AUTH_TOKENS=TOKEN, SECRET_KEY=KEY))
    now = int(time.time())
    signed = jwt.encode({"sub": "x", "aud": "pman", "iat": now, "exp": now + 60}, KEY)
    assert auth.check(f"Bearer {signed}") == "invalid_token"


def test_secrets_never_shown(tmp_path: Path) -> None:
    s = settings(
        tmp_path, PMAN_AUTH_TOKENS=TOKEN, PMAN_AUTH_USER="u", PMAN_AUTH_PASSWORD="pw" * 20,
        SECRET_KEY=KEY,
    )  # fmt: skip
    shown = repr(s)
    assert TOKEN not in shown and KEY not in shown and "pw" * 20 not in shown


def test_flask_routes_behind_the_middleware(tmp_path: Path) -> None:
    c = client(tmp_path, PMAN_AUTH="token", PMAN_AUTH_TOKENS=TOKEN)
    assert c.get("/health").status_code == 200
    resp = c.get("/api/v1/")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="pman"'
    resp = c.get("/api/v1/", headers={"Authorization": "Bearer nope"})
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="pman", error="invalid_token"'
    assert c.get("/api/v1/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # no user configured: the login refuses, without saying more
    resp = c.post("/api/v1/auth-token/", json={"pman_user": "u", "pman_password": "p"})
    assert resp.status_code == 401
    resp = c.post("/api/v1/auth-token/", json={"user": "u"})
    assert resp.status_code == 400 and "pman_user" in resp.json["fields"]


def test_a_resource_s_url_prefix_opens_the_same_routes_and_no_others(tmp_path: Path) -> None:
    # pfcon pinned to a resource by URL logs in under that URL
    c = client(
        tmp_path, PMAN_AUTH="token", PMAN_AUTH_USER="chris", PMAN_AUTH_PASSWORD="pw", SECRET_KEY=KEY
    )
    login = {"pman_user": "chris", "pman_password": "pw"}
    resp = c.post("/default/api/v1/auth-token/", json=login)
    assert resp.status_code == 200, resp.get_json()
    token = resp.get_json()["token"]
    assert c.get("/default/api/v1/openapi.json").status_code == 200
    assert c.get("/default/api/v1/jobs/").status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert c.get("/default/api/v1/jobs/", headers=bearer).status_code == 200
