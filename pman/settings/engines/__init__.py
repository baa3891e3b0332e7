"""Each engine's own section, by CONTAINER_ENV.

Each module here declares what one engine reads (and only that engine), so that
it can move into the engine's package (pman/backends/<engine>/settings.py)."""

from __future__ import annotations

from pman.settings.declare import EngineSettings
from pman.settings.engines.cromwell import CromwellSettings
from pman.settings.engines.docker import DockerSettings, PodmanSettings
from pman.settings.engines.kubernetes import KubernetesSettings
from pman.settings.engines.local import LocalSettings
from pman.settings.engines.slurm import SlurmSettings
from pman.settings.engines.swarm import SwarmSettings

ENGINE_SECTIONS: dict[str, type[EngineSettings]] = {
    "local": LocalSettings,
    "docker": DockerSettings,
    "podman": PodmanSettings,
    "swarm": SwarmSettings,
    "kubernetes": KubernetesSettings,
    "slurm": SlurmSettings,
    "cromwell": CromwellSettings,
}


def engine_section(name: str) -> type[EngineSettings]:
    """The section of the engine ``name``; an engine that declares none has an empty one."""
    return ENGINE_SECTIONS.get(name, EngineSettings)
