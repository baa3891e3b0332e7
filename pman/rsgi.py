"""RSGI entry point, what ``pman serve`` runs under granian: ``pman.rsgi:application``
(see pman.api.rsgi; pman.asgi is the same application for ASGI servers)."""

from pman.__main__ import configure_logging
from pman.app import create_rsgi_app

configure_logging()
application = create_rsgi_app()
