"""Backends by name, and each engine's settings section.

Both tables name classes as ``"module:Class"``, imported when asked for: a
backend only when chosen, so that a library it needs matters only to the
sites that use it; an engine's section (``pman/backends/<engine>/settings.py``)
whenever pman's settings are read, without the engine's adapter or library.
This module imports nothing of pman.settings (which imports it).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

from pman.errors import ConfigError

if TYPE_CHECKING:
    from pman.backends.base import Backend
    from pman.settings import Settings
    from pman.settings.declare import EngineSettings

REGISTRY: dict[str, str] = {
    "local": "pman.backends.local:LocalBackend",
    "docker": "pman.backends.docker:DockerBackend",
    "podman": "pman.backends.docker:PodmanBackend",
    "swarm": "pman.backends.swarm:SwarmBackend",
    "kubernetes": "pman.backends.kubernetes:KubernetesBackend",
    "cromwell": "pman.backends.cromwell:CromwellBackend",
    "slurm": "pman.backends.slurm:SlurmBackend",
}

#: CONTAINER_ENV -> the engine's own settings section, in the reference's order
#: (an engine without one has the empty :class:`~pman.settings.declare.EngineSettings`)
SETTINGS: dict[str, str] = {
    "local": "pman.backends.local.settings:LocalSettings",
    "docker": "pman.backends.docker.settings:DockerSettings",
    "podman": "pman.backends.docker.settings:PodmanSettings",
    "swarm": "pman.backends.swarm.settings:SwarmSettings",
    "kubernetes": "pman.backends.kubernetes.settings:KubernetesSettings",
    "slurm": "pman.backends.slurm.settings:SlurmSettings",
    "cromwell": "pman.backends.cromwell.settings:CromwellSettings",
}


def _load(target: str) -> Any:
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


@functools.cache
def engine_sections() -> dict[str, type[EngineSettings]]:
    """CONTAINER_ENV -> the section of that engine's settings (imports only
    the engines' settings modules)."""
    return {name: _load(target) for name, target in SETTINGS.items()}


def load_backend(name: str, settings: Settings) -> Backend:
    """Build the backend registered under ``name``; an unknown name is a ConfigError."""
    try:
        target = REGISTRY[name]
    except KeyError:
        available = ", ".join(sorted(REGISTRY))
        raise ConfigError(
            f"CONTAINER_ENV={name!r} is not available in this pman (available: {available})",
            fields={"CONTAINER_ENV": f"not one of {available}"},
        ) from None
    try:
        cls: type[Backend] = _load(target)
    except ImportError as e:
        raise ConfigError(
            f"CONTAINER_ENV={name!r} needs a library that is not installed: {e}",
            fields={"CONTAINER_ENV": str(e)},
        ) from e
    return cls.from_settings(settings)
