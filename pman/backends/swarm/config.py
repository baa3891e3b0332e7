"""What the swarm backend reads from pman's settings, read once."""

from __future__ import annotations

from dataclasses import dataclass

from pman.backends.docker.config import EngineConfig, JobOptions
from pman.settings import Settings


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
        return cls(
            engine=EngineConfig.from_settings(settings),
            jobs=JobOptions.from_settings(settings),
            nfs_server=settings.nfs_server,
            pending_timeout=settings.swarm_pending_timeout,
        )
