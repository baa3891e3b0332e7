"""HTTP: the only package that knows Flask."""

from pman.api.errors import register_error_handlers
from pman.api.v1 import health, v1

__all__ = ["health", "register_error_handlers", "v1"]
