"""ASGI entry point, what ``pman serve`` runs: ``pman.asgi:application``
(also for any ASGI server, e.g. ``gunicorn -k uvicorn.workers.UvicornWorker``)."""

from pman.__main__ import configure_logging
from pman.app import create_asgi_app

configure_logging()
application = create_asgi_app()
