"""Jobs as containers on a Docker engine or Podman's Docker-compatible service.

- :mod:`.settings`: the docker and podman variables (swarm's extend them)
- :mod:`.config`: what the backends read from pman's settings
- :mod:`.state`: a container's state from the engine's answers (pure)
- :mod:`.manifest`: a job as a container create request (pure)
- :mod:`.logs`: stdout and stderr frames merged a whole line at a time (pure)
- :mod:`.errors`: the docker SDK's errors as pman errors, in one function
- :mod:`.events`: the engine's event stream as job names
- :mod:`.engine`: one Engine API endpoint (the swarm backend holds one too)
- :mod:`.adapter`: the docker and podman backends
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pman.backends.lazy import exports

if TYPE_CHECKING:
    from pman.backends.docker.adapter import DockerBackend, PodmanBackend
    from pman.backends.docker.state import parse_engine_time

__all__ = ["DockerBackend", "PodmanBackend", "parse_engine_time"]

# imported when first asked for: pman's settings import this package (the
# engine's own section, .settings) without its adapter and client library
__getattr__ = exports(
    __name__,
    {
        "DockerBackend": "adapter",
        "PodmanBackend": "adapter",
        "parse_engine_time": "state",
    },
)
