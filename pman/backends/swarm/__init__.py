"""Jobs as Docker Swarm services, one replicated service per job.

- :mod:`.settings`: its variables (the docker engine's, and its own)
- :mod:`.config`: what the backend reads from pman's settings
- :mod:`.state`: a job's state from its service and tasks (pure)
- :mod:`.manifest`: a job as a service's task template (pure)
- :mod:`.adapter`: the swarm backend, holding a
  :class:`~pman.backends.docker.engine.DockerEngine` for the manager
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pman.backends.lazy import exports

if TYPE_CHECKING:
    from pman.backends.swarm.adapter import SwarmBackend

__all__ = ["SwarmBackend"]

# imported when first asked for: pman's settings import this package (the
# engine's own section, .settings) without its adapter and client library
__getattr__ = exports(
    __name__,
    {
        "SwarmBackend": "adapter",
    },
)
