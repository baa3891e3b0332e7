"""Jobs as Docker Swarm services, one replicated service per job.

- :mod:`.config`: what the backend reads from pman's settings
- :mod:`.state`: a job's state from its service and tasks (pure)
- :mod:`.manifest`: a job as a service's task template (pure)
- :mod:`.adapter`: the swarm backend, holding a
  :class:`~pman.backends.docker.engine.DockerEngine` for the manager
"""

from pman.backends.swarm.adapter import SwarmBackend

__all__ = ["SwarmBackend"]
