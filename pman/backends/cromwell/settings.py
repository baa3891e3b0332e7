"""The cromwell engine's settings: the Cromwell server."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import field_validator

from pman.settings.declare import EngineSettings, Env, Environ, Problems

if TYPE_CHECKING:
    from pman.settings.jobs import JobSettings
    from pman.settings.storage import StorageSettings


class CromwellSettings(EngineSettings):
    """A Cromwell server, which runs each job as a one-task WDL workflow."""

    title = "cromwell"

    url: Annotated[
        str | None,
        Env(
            "CROMWELL_URL",
            "the Cromwell server's base URL, e.g. `http://cromwell.example:8000` (checked to be "
            "an `http://` or `https://` URL at start-up)",
            default_doc="— (required for `cromwell`)",
        ),
    ] = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value and not re.match(r"https?://[^/\s]", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    def check(
        self, storage: StorageSettings, jobs: JobSettings, environ: Environ, problems: Problems
    ) -> None:
        if not self.url:
            problems.add(
                environ.name_of("CROMWELL_URL"),
                f"required when {environ.name_of('CONTAINER_ENV')}=cromwell",
            )
