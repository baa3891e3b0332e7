"""The Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask

from pman.api import health, register_error_handlers, v1
from pman.api.context import EXTENSION_KEY, Runtime
from pman.backends import load_backend
from pman.backends.base import Backend
from pman.settings import Settings, load_settings
from pman.storage import Storage

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> Flask:
    """Build settings, backend and storage ONCE and register the routes.

    Tests inject ``settings`` and/or ``backend``; production reads the
    environment. Raises ConfigError (all problems at once) on bad settings.
    """
    settings = settings or load_settings()
    backend = backend or load_backend(settings.container_env, settings)
    app = Flask("pman")
    app.config["SECRET_KEY"] = settings.secret_key
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION_KEY] = Runtime(settings, backend, Storage(settings))
    register_error_handlers(app)
    app.register_blueprint(v1)
    app.register_blueprint(health)
    log.info("pman %s serving %s", settings.server_version, backend.describe())
    return app
