"""The job registry's database, and the name it gives this pman on the engines."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Self

from pman.settings.declare import Env, Section

DATABASES = ("sqlite", "postgresql")


def check_database_url(text: str) -> str:
    """A SQLAlchemy URL of a database pman supports; ValueError otherwise."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except ArgumentError as e:
        raise ValueError(f"{text!r} is not a database URL: {e}") from e
    if url.get_backend_name() not in DATABASES:
        raise ValueError(f"{url.get_backend_name()!r}: only sqlite and postgresql are supported")
    return text


class RegistrySettings(Section):
    """The registry: where pman keeps every job's state and logs (see [The registry
    and the tracker](../README.md#the-registry-and-the-tracker))."""

    title = "registry"

    database_url: Annotated[
        str,
        Env(
            "PMAN_DATABASE_URL",
            "the registry, a SQLAlchemy URL: SQLite or PostgreSQL, e.g. "
            "`postgresql+psycopg://user:pass@host/db`",
            parse=check_database_url,
            form="URL",
            default_doc="`sqlite:///$PMAN_DATA_DIR/pman.db`",
        ),
    ] = ""
    instance: Annotated[
        str,
        Env(
            "PMAN_INSTANCE",
            "names this pman on its jobs (label `org.chrisproject.pman.instance`): when several "
            "pmans share an engine, each adopts only its own strays (and unnamed ones)",
            blank_is_unset=True,
            default_doc="a digest of the registry's URL",
        ),
    ] = ""

    def with_defaults(self, data_dir: Path) -> Self:
        """The URL and instance filled in: one registry, one instance, stable
        across restarts and apart across pmans."""
        url = self.database_url or f"sqlite:///{data_dir / 'pman.db'}"
        instance = self.instance or hashlib.sha256(url.encode()).hexdigest()[:12]
        return self.model_copy(update={"database_url": url, "instance": instance})
