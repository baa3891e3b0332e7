"""ASGI entry point, what ``pman serve`` runs under granian: ``pman.asgi:application``
(see pman.api.asgi; other ASGI servers are not tested)."""

from pman.__main__ import configure_logging
from pman.app import create_asgi_app

configure_logging()
application = create_asgi_app()
