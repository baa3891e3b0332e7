"""What the Docker Engine API backends read from pman's settings, read once.

Three parts, shared by the container backends (docker, podman) and the swarm
backend: how to reach the engine and where job data lives on its host
(:class:`EngineConfig`, what :class:`~pman.backends.docker.engine.DockerEngine`
reads) and how a job's container is confined and limited
(:class:`JobOptions`, what the container and service builders read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pman.backends.docker.settings import DockerSettings
from pman.backends.docker.state import never_started_after

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings
    from pman.settings.jobs import JobSettings


@dataclass(frozen=True)
class EngineConfig:
    """The engine's address and client options, and the storage it mounts jobs from."""

    #: the DOCKER_* variables the docker SDK understands (DOCKER_HOST always set)
    environment: dict[str, str]
    #: the Engine API version the client speaks (DOCKER_API_VERSION)
    api_version: str
    #: seconds an engine call may take (PMAN_ENGINE_TIMEOUT)
    timeout: float
    #: host, nfs or docker_local_volume (STORAGE_TYPE)
    storage_type: str
    #: STOREBASE: a host folder (host, nfs storage)
    storebase: Path | None
    #: VOLUME_NAME: the local volume holding job data (docker_local_volume)
    volume_name: str | None
    #: PFCON_SELECTOR: finds pfcon's container, whose storeBase mount is the volume
    pfcon_selector: str

    @classmethod
    def from_resource(cls, resource: Resource, core: CoreSettings) -> EngineConfig:
        """The engine of a resource that runs docker, podman or swarm (whose
        sections extend docker's)."""
        engine, storage = resource.engine_as(DockerSettings), resource.storage
        return cls(
            environment=engine.environment(),
            api_version=engine.api_version,
            timeout=core.engine_timeout,
            storage_type=storage.storage_type,
            storebase=storage.storebase,
            volume_name=storage.volume_name,
            pfcon_selector=storage.pfcon_selector,
        )

    @property
    def host(self) -> str:
        """DOCKER_HOST as given (the SDK shows a unix socket as http+docker://localhost)."""
        return self.environment["DOCKER_HOST"]


@dataclass(frozen=True)
class JobOptions:
    """How every job's container is limited and confined."""

    #: IGNORE_LIMITS: no cpu and memory limits given to the engine
    ignore_limits: bool
    #: SHM_SIZE in MiB, None for the engine's default
    shm_size: int | None
    #: PMAN_CAP_ADD: the capabilities given back (all others are dropped)
    cap_add: tuple[str, ...]
    #: PMAN_READ_ONLY_ROOTFS: a read-only root filesystem, a tmpfs at /tmp
    read_only_rootfs: bool

    @classmethod
    def from_jobs(cls, jobs: JobSettings) -> JobOptions:
        """The options of a resource's jobs section."""
        return cls(
            ignore_limits=jobs.ignore_limits,
            shm_size=jobs.shm_size,
            cap_add=tuple(jobs.cap_add),
            read_only_rootfs=jobs.read_only_rootfs,
        )


@dataclass(frozen=True)
class DockerConfig:
    """Everything the docker and podman backends read from pman's settings."""

    engine: EngineConfig
    jobs: JobOptions

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerConfig:
        return cls.from_resource(settings.resource, settings.core)

    @classmethod
    def from_resource(cls, resource: Resource, core: CoreSettings) -> DockerConfig:
        """The configuration of a resource that runs docker or podman."""
        return cls(
            engine=EngineConfig.from_resource(resource, core),
            jobs=JobOptions.from_jobs(resource.jobs),
        )

    @property
    def never_started_after(self) -> float:
        """Seconds after which a created, never started container is a system error."""
        return never_started_after(self.engine.timeout)
