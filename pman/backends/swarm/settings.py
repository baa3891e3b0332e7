"""The swarm engine's settings: the docker engine's, and how long a task may wait."""

from __future__ import annotations

from typing import Annotated

from pman.backends.docker.settings import DockerSettings
from pman.settings.declare import Env


class SwarmSettings(DockerSettings):
    """A Docker swarm: the variables of [docker](#docker) (`DOCKER_HOST`: a manager's),
    and these."""

    title = "swarm"

    pending_timeout: Annotated[
        float,
        Env(
            "PMAN_SWARM_PENDING_TIMEOUT",
            "seconds a task may wait to be placed on a node before the job is "
            "`finishedWithError` (no node has the resources, say)",
            ge=1.0,
        ),
    ] = 60.0
