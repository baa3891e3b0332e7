"""What the swarm backend reads from pman's settings, read once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pman.backends.docker.config import EngineConfig, JobOptions
from pman.backends.swarm.settings import SwarmSettings

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings


@dataclass(frozen=True)
class SwarmConfig:
    """Everything the swarm backend reads from pman's settings: the manager's
    address and the storage (as the docker backend's), how jobs are confined,
    and what only a swarm needs."""

    engine: EngineConfig
    jobs: JobOptions
    #: NFS_SERVER: with STORAGE_TYPE=nfs, every node mounts STOREBASE from it
    nfs_server: str | None
    #: PMAN_SWARM_PENDING_TIMEOUT: seconds a task may wait for a node
    pending_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SwarmConfig:
        return cls.from_resource(settings.resource, settings.core)

    @classmethod
    def from_resource(cls, resource: Resource, core: CoreSettings) -> SwarmConfig:
        """The configuration of a resource that runs ``swarm``."""
        return cls(
            engine=EngineConfig.from_resource(resource, core),
            jobs=JobOptions.from_jobs(resource.jobs),
            nfs_server=resource.storage.nfs_server,
            pending_timeout=resource.engine_as(SwarmSettings).pending_timeout,
        )
