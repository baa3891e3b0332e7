"""WSGI entry point: ``gunicorn pman.wsgi:application``.

Under a WSGI server each request holds one of its threads from its first
byte to its last; pman.api.lanes.LaneMiddleware keeps engine requests and log
streams within their bounds, and README's "Serving under gunicorn" says which
worker class and thread count keep polls answered. ``pman serve`` (ASGI,
pman.asgi) needs none of that.
"""

from pman.__main__ import configure_logging
from pman.app import create_app

configure_logging()
application = create_app(wsgi_lanes=True)
