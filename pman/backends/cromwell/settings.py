"""The cromwell engine's settings: the Cromwell server."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import field_validator

from pman.settings.declare import EngineSettings, Env, Environ, Problems

if TYPE_CHECKING:
    from pman.settings.jobs import JobSettings
    from pman.settings.storage import StorageSettings


#: Cromwell's limit on label keys and values
#: https://cromwell.readthedocs.io/en/stable/cromwell_features/Labels/
LABEL_MAX = 255


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
        if storage.storage_type != "host":
            problems.add(
                environ.name_of("STORAGE_TYPE"),
                "the cromwell backend needs host storage: STOREBASE at the same path on the "
                "Cromwell server's compute nodes",
            )
        if jobs.container_user.uid or jobs.container_user.gid:
            problems.add(
                environ.name_of("CONTAINER_USER"),
                "not supported by the cromwell backend: the site's Cromwell configuration "
                "decides whom jobs run as",
            )
        if jobs.shm_size is not None:
            problems.add(environ.name_of("SHM_SIZE"), "not supported by the cromwell backend")
        if jobs.ignore_limits:
            problems.add(
                environ.name_of("IGNORE_LIMITS"),
                "not supported by the cromwell backend: a job's cpu and memory are what "
                "Cromwell's scheduler allocates to it",
            )
        for key, value in jobs.labels.items():
            if len(key) > LABEL_MAX or len(value) > LABEL_MAX:
                problems.add(
                    environ.name_of("JOB_LABELS"),
                    f"label {key!r}: Cromwell takes keys and values of at most "
                    f"{LABEL_MAX} characters",
                )
