"""The docker and podman engines' settings: how pman reaches the engine's API
(swarm's extend them, pman.backends.swarm.settings)."""

from __future__ import annotations

from typing import Annotated

from pman.settings.declare import EngineSettings, Env


class DockerSettings(EngineSettings):
    """How pman reaches the Docker Engine API (docker; podman and swarm too)."""

    title = "docker"
    volumes = ("docker_local_volume",)

    host: Annotated[
        str,
        Env("DOCKER_HOST", "the engine's address", blank_is_unset=True),
    ] = "unix:///var/run/docker.sock"
    tls_verify: Annotated[
        bool, Env("DOCKER_TLS_VERIFY", "`yes`: TLS to a remote engine, its certificate checked")
    ] = False
    cert_path: Annotated[
        str | None, Env("DOCKER_CERT_PATH", "the folder of the client's TLS certificates")
    ] = None
    api_version: Annotated[
        str,
        Env(
            "DOCKER_API_VERSION",
            "the Engine API version pman speaks (fixed, so that start-up needs no round-trip)",
        ),
    ] = "1.41"

    def environment(self) -> dict[str, str]:
        """The DOCKER_* variables the docker SDK's ``from_env`` understands."""
        env = {"DOCKER_HOST": self.host}
        if self.tls_verify:
            env["DOCKER_TLS_VERIFY"] = "1"
        if self.cert_path:
            env["DOCKER_CERT_PATH"] = self.cert_path
        return env


class PodmanSettings(DockerSettings):
    """Podman's Docker-compatible API: the variables of [docker](#docker), with another default."""

    title = "podman"

    host: Annotated[
        str,
        Env("DOCKER_HOST", "the Podman service's address", blank_is_unset=True),
    ] = "unix:///run/podman/podman.sock"
