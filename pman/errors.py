"""pman's own exceptions.

Backends convert every engine library error into one of these (in one
function per adapter); only ``pman.api`` maps them to HTTP statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pman.models import JobInfo


class PmanError(Exception):
    """Base of every error pman raises on purpose."""

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class ConfigError(PmanError):
    """Bad environment variables: the service refuses to start."""


class InvalidJobSpec(PmanError):
    """The request is malformed or asks for something impossible."""


class UnsupportedOption(InvalidJobSpec):
    """A well-formed request the chosen backend cannot honour (e.g. GPUs on local)."""


class JobNotFound(PmanError):
    """No job of that name on the backend."""


class JobExists(PmanError):
    """A job of that name exists already; ``existing`` describes it when known."""

    def __init__(self, message: str, *, existing: JobInfo | None = None) -> None:
        super().__init__(message)
        self.existing = existing


class BackendError(PmanError):
    """The engine failed or answered something pman cannot use."""

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class BackendUnavailable(BackendError):
    """The engine cannot be reached at all."""
