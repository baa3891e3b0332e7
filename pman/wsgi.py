"""gunicorn entry point: ``gunicorn pman.wsgi:application``."""

from pman.__main__ import configure_logging
from pman.app import create_app

configure_logging()
application = create_app()
