"""What the request handlers share: built once per app by create_app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from pman.api.auth import Authenticator
from pman.backends.base import Backend
from pman.service import JobService
from pman.settings import Settings

EXTENSION_KEY = "pman"


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    service: JobService
    authenticator: Authenticator

    @property
    def backend(self) -> Backend:
        return self.service.backend


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]
