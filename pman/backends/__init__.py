"""Backends by name. Each is imported only when chosen, so that a library a
backend needs matters only to the sites that use it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pman.errors import ConfigError

if TYPE_CHECKING:
    from pman.backends.base import Backend
    from pman.settings import Settings

REGISTRY: dict[str, str] = {
    "local": "pman.backends.local:LocalBackend",
    "docker": "pman.backends.docker:DockerBackend",
    "podman": "pman.backends.docker:PodmanBackend",
    "swarm": "pman.backends.swarm:SwarmBackend",
    "kubernetes": "pman.backends.kubernetes:KubernetesBackend",
    "cromwell": "pman.backends.cromwell:CromwellBackend",
    "slurm": "pman.backends.slurm:SlurmBackend",
}


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
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"CONTAINER_ENV={name!r} needs a library that is not installed: {e}",
            fields={"CONTAINER_ENV": str(e)},
        ) from e
    cls: type[Backend] = getattr(module, class_name)
    return cls.from_settings(settings)
