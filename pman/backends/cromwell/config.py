"""What the cromwell backend reads of pman's settings, read in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pman.backends.cromwell.settings import CromwellSettings

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings

#: the engine, for messages ("Cromwell server at http://...")
ENGINE = "Cromwell server"


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
        """The configuration of a resource that runs ``cromwell`` (what it
        cannot work with was refused when the settings were read:
        CromwellSettings.check)."""
        url = resource.engine_as(CromwellSettings).url
        storage, jobs = resource.storage, resource.jobs
        # the settings refused a resource without a URL (CromwellSettings.check)
        assert url
        return cls(
            url=url.rstrip("/"),
            timeout=core.engine_timeout,
            storebase=str(storage.storebase or "").rstrip("/"),
            timelimit_minutes=jobs.timelimit_minutes,
        )
