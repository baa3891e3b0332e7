"""ASGI entry point: ``pman.asgi:application``, for an ASGI server (``granian
--interface asgi``, others are not tested). ``pman serve`` runs the same
application through granian's RSGI interface (pman.rsgi), which costs less
per request."""

from pman.__main__ import configure_logging
from pman.app import create_asgi_app

configure_logging()
application = create_asgi_app()
