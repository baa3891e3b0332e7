"""``pman doctor`` for a swarm: the Engine API checks of docker, and the node a manager."""

from __future__ import annotations

from pman.backends.docker.doctor import checks

__all__ = ["checks"]
