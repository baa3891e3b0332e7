"""What the request handlers share: built once per app by create_app.

The handlers reach the engine only through the service (JobService), never
the backend itself (an import-linter contract in pyproject.toml)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from pman.api.auth import Authenticator
from pman.service import JobService
from pman.settings import Settings

EXTENSION_KEY = "pman"


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    service: JobService
    authenticator: Authenticator


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]
