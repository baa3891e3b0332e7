"""What the request handlers share: built once per app by create_app."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from pman.backends.base import Backend
from pman.settings import Settings
from pman.storage import Storage

EXTENSION_KEY = "pman"


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    backend: Backend
    storage: Storage


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]
