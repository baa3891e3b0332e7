"""The Flask application factory."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping

from flask import Flask

from pman.api import health, register_error_handlers, v1
from pman.api import observe as observe_requests
from pman.api.asgi import LanedASGI
from pman.api.auth import Authenticator, AuthMiddleware
from pman.api.context import EXTENSION_KEY, Runtime
from pman.api.docs import docs
from pman.api.fastpath import PollFastPath
from pman.api.lanes import LaneMiddleware
from pman.api.pinning import ResourcePrefix
from pman.api.rsgi import LanedRSGI
from pman.backends import load_backend
from pman.backends.base import Backend
from pman.registry import Registry
from pman.resources import build_runtimes
from pman.service import JobService
from pman.settings import Settings, load_settings
from pman.telemetry import install_record_factory
from pman.tracker import Tracker

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    registry: Registry | None = None,
    *,
    wsgi_lanes: bool = False,
    backends: Mapping[str, Backend] | None = None,
) -> Flask:
    """Build settings, backend, registry and tracker ONCE and register the routes.

    Tests inject what they need; production reads the environment. Raises
    ConfigError (all problems at once) on bad settings. ``wsgi_lanes``: keep
    engine requests and log streams within their bounds under a WSGI server
    (pman.api.lanes.LaneMiddleware); the RSGI and ASGI applications
    (create_rsgi_app, create_asgi_app) do that themselves. ``backend`` is the
    first resource's, ``backends`` any resource's by name (tests); the others
    are built from each resource's settings (pman.resources).
    """
    settings = settings or load_settings()
    install_record_factory()
    # before anything else is built: no credentials, no service
    authenticator = Authenticator.from_settings(settings)
    given = dict(backends or {})
    if backend is not None:
        given.setdefault(settings.resource.name, backend)
    # one backend per resource, each engine call timed and its failures counted
    runtimes = build_runtimes(settings, given, load=load_backend)
    if registry is None:
        if settings.registry.database_url.startswith("sqlite"):
            settings.core.data_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry.from_url(settings.registry.database_url)
    registry.configure_webhooks(settings.webhooks.url)
    tracker = Tracker.for_resources(registry, runtimes, settings)
    service = JobService(settings, runtimes, registry, tracker)
    app = Flask("pman")
    app.config["SECRET_KEY"] = settings.auth.secret_key
    # werkzeug refuses a Content-Length over it before reading, and stops reading
    # a chunked body there; one byte more than the limit, so that the POST route
    # can tell a body of exactly the limit from a longer one it cut (api/v1.py)
    app.config["PMAN_MAX_REQUEST_BYTES"] = settings.server.max_request_bytes
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_request_bytes + 1
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION_KEY] = Runtime(settings, service, authenticator)
    # no route, the poll fast path included, runs without credentials; outside
    # that, every answer (401s too) gets its request id, metrics and access line
    pinning = ResourcePrefix(PollFastPath(app.wsgi_app, service), service.resource_names())
    inner = AuthMiddleware(pinning, authenticator)
    app.wsgi_app = observe_requests.RequestObserver(  # type: ignore[method-assign]
        LaneMiddleware(inner, settings) if wsgi_lanes else inner,
        app.url_map,
        settings.core.access_log,
    )
    register_error_handlers(app)
    observe_requests.install(app)
    app.register_blueprint(v1)
    app.register_blueprint(health)
    app.register_blueprint(docs)
    app.register_blueprint(observe_requests.ops)
    if settings.core.tracker_enabled:
        tracker.start()
        atexit.register(tracker.stop)
    for runtime in runtimes:
        log.info(
            "pman %s serving %s as resource %s",
            settings.server_version,
            runtime.backend.describe(),
            runtime.name,
        )
    return app


def create_rsgi_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    registry: Registry | None = None,
) -> LanedRSGI:
    """The application as ``pman serve`` runs it: granian's RSGI interface,
    each kind of work on threads of its own (pman.api.bridge, pman.api.rsgi)."""
    settings = settings or load_settings()
    return LanedRSGI(create_app(settings, backend, registry), settings)


def create_asgi_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    registry: Registry | None = None,
) -> LanedASGI:
    """The same for an ASGI server (pman.api.bridge, pman.api.asgi)."""
    settings = settings or load_settings()
    return LanedASGI(create_app(settings, backend, registry), settings)
