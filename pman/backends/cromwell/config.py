"""What the cromwell backend reads of pman's settings, read in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pman.backends.cromwell.settings import CromwellSettings
from pman.errors import ConfigError

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings

#: the engine, for messages ("Cromwell server at http://...")
ENGINE = "Cromwell server"
#: Cromwell's limit on label keys and values
#: https://cromwell.readthedocs.io/en/stable/cromwell_features/Labels/
LABEL_MAX = 255


@dataclass(frozen=True)
class CromwellConfig:
    """The cromwell backend's settings: the server, and what every workflow gets."""

    #: CROMWELL_URL without a trailing "/"
    url: str
    #: PMAN_ENGINE_TIMEOUT: seconds one request to Cromwell may take
    timeout: float
    #: STOREBASE without a trailing "/" ("" when unset): the host folder of
    #: the job folders a job's mounts name relative to it
    storebase: str
    #: TIMELIMIT_MINUTES: every task's runtime_minutes
    timelimit_minutes: int

    @property
    def where(self) -> str:
        """The server, for messages."""
        return f"{ENGINE} at {self.url}"

    @classmethod
    def from_settings(cls, settings: Settings) -> CromwellConfig:
        """The cromwell backend's settings (:meth:`from_resource`)."""
        return cls.from_resource(settings.resource, settings.core)

    @classmethod
    def from_resource(cls, resource: Resource, core: CoreSettings) -> CromwellConfig:
        """The configuration of a resource that runs ``cromwell``; ConfigError
        naming every setting it cannot work with."""
        url = resource.engine_as(CromwellSettings).url
        storage, jobs = resource.storage, resource.jobs
        problems: dict[str, str] = {}
        if not url:
            problems["CROMWELL_URL"] = "required when CONTAINER_ENV=cromwell"
        if storage.storage_type != "host":
            problems["STORAGE_TYPE"] = (
                "the cromwell backend needs host storage: STOREBASE at the same path on the "
                "Cromwell server's compute nodes"
            )
        if jobs.container_user.uid or jobs.container_user.gid:
            problems["CONTAINER_USER"] = (
                "not supported by the cromwell backend: the site's Cromwell configuration "
                "decides whom jobs run as"
            )
        if jobs.shm_size is not None:
            problems["SHM_SIZE"] = "not supported by the cromwell backend"
        if jobs.ignore_limits:
            problems["IGNORE_LIMITS"] = (
                "not supported by the cromwell backend: a job's cpu and memory are what "
                "Cromwell's scheduler allocates to it"
            )
        for key, value in jobs.labels.items():
            if len(key) > LABEL_MAX or len(value) > LABEL_MAX:
                problems["JOB_LABELS"] = (
                    f"label {key!r}: Cromwell takes keys and values of at most "
                    f"{LABEL_MAX} characters"
                )
        if problems:
            lines = "\n".join(f"  {k}: {v}" for k, v in sorted(problems.items()))
            raise ConfigError(f"invalid configuration:\n{lines}", fields=problems)
        assert url
        return cls(
            url=url.rstrip("/"),
            timeout=core.engine_timeout,
            storebase=str(storage.storebase or "").rstrip("/"),
            timelimit_minutes=jobs.timelimit_minutes,
        )
