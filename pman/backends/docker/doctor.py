"""``pman doctor`` for the Engine API engines: docker, podman (and swarm, which adds its own).

The engine answers its version call; a unix socket is there and this user
may read and write it; STOREBASE (host storage) is a folder pman can write,
or the storage volume is found.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from pman.backends.docker.config import EngineConfig
from pman.backends.docker.engine import DockerEngine
from pman.backends.kit.doctor import (
    Check,
    DoctorContext,
    Finding,
    folder_checks,
    ok,
    problem,
    skipped,
    who,
)
from pman.errors import PmanError

#: what answers at DOCKER_HOST, and where it usually listens
ENGINES = {
    "docker": ("Docker engine", "unix:///var/run/docker.sock"),
    "podman": ("Podman service", "unix:///run/podman/podman.sock"),
    "swarm": ("Docker engine", "unix:///var/run/docker.sock"),
}


def checks(context: DoctorContext) -> list[Check]:
    config = EngineConfig.from_resource(context.resource, context.core)
    config = _bounded(config, context.timeout)
    kind = context.resource.container_env
    host_var = context.name_of("DOCKER_HOST")
    found = [
        Check("socket", lambda: [socket_access(config.host, host_var, kind)]),
        Check("engine", lambda: [engine_version(config, kind, host_var)], needs="socket"),
    ]
    if kind == "swarm":
        found.append(Check("swarm manager", lambda: [swarm_manager(config)], needs="engine"))
    found += storage_checks(context, config)
    return found


def _bounded(config: EngineConfig, timeout: float) -> EngineConfig:
    return replace(config, timeout=min(config.timeout, timeout))


def socket_path(host: str) -> Path | None:
    """The socket file of a ``unix://`` DOCKER_HOST, None for a TCP or SSH one."""
    parts = urlsplit(host)
    if parts.scheme not in ("unix", "http+unix", ""):
        return None
    return Path(parts.path or host)


def socket_access(host: str, variable: str, kind: str) -> Finding:
    """A unix socket exists, is a socket, and this user may read and write it."""
    path = socket_path(host)
    name, usual = ENGINES[kind]
    if path is None:
        return skipped("socket", f"{variable}={host} is not a unix socket: nothing to check here")
    where_fix = (
        f"set {variable} to the {name}'s socket (usually {usual}; `docker context inspect` or "
        "`podman info --format '{{.Host.RemoteSocket.Path}}'` shows it), or start the "
        f"{name} there"
    )
    if not path.exists():
        return problem("socket", f"{variable}={host}: there is no socket at {path}", where_fix)
    if not stat.S_ISSOCK(path.stat().st_mode):
        return problem("socket", f"{variable}={host}: {path} is not a socket", where_fix)
    if not os.access(path, os.R_OK | os.W_OK):
        return problem(
            "socket",
            f"{variable}={host}: {who()} may not read and write {path}",
            f"add the user pman runs as to the socket's group (e.g. `usermod -aG docker "
            f"<user>`, group {_group(path)}), or run pman as a user that may use the {name}",
        )
    return ok("socket", f"{path} is readable and writable by {who()}")


def _group(path: Path) -> str:
    try:
        import grp

        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, ImportError, OSError):
        return str(path.stat().st_gid)


def engine_version(config: EngineConfig, kind: str, variable: str) -> Finding:
    name, _ = ENGINES[kind]
    try:
        api = DockerEngine.client(config, name)
        try:
            version = api.version()
        finally:
            api.close()
    except PmanError as e:
        return problem("engine", f"the {name} at {config.host}: {e.message}", _start_fix(name))
    except Exception as e:
        return problem(
            "engine", f"the {name} at {config.host} does not answer: {e}", _start_fix(name)
        )
    product = next(
        (c.get("Name", "") for c in version.get("Components") or [] if "Podman" in c.get("Name")),
        "",
    )
    what = product or name
    return ok(
        "engine",
        f"{what} {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}, pman "
        f"speaks {config.api_version}) at {config.host}",
    )


def _start_fix(name: str) -> str:
    if name == "Podman service":
        return "start it (`systemctl start podman.socket`, or `podman system service -t 0 &`)"
    return "start it (`systemctl start docker`), or point DOCKER_HOST at a running engine"


def swarm_manager(config: EngineConfig) -> Finding:
    api = DockerEngine.client(config, "Docker engine")
    try:
        swarm = api.info().get("Swarm") or {}
    finally:
        api.close()
    state = swarm.get("LocalNodeState")
    if state != "active" or not swarm.get("ControlAvailable"):
        return problem(
            "swarm manager",
            f"the Docker engine at {config.host} is not a swarm manager (LocalNodeState={state!r})",
            "run `docker swarm init` there, or point DOCKER_HOST at a manager node",
        )
    return ok("swarm manager", f"node {swarm.get('NodeID', '?')} is a swarm manager")


def storage_checks(context: DoctorContext, config: EngineConfig) -> list[Check]:
    storage = config.storage_type
    if storage == "docker_local_volume":
        return [Check("storage volume", lambda: [storage_volume(config)], needs="engine")]
    if socket_path(config.host) is None:
        return [
            Check(
                "folder STOREBASE",
                lambda: [
                    skipped(
                        "folder STOREBASE",
                        f"STOREBASE is a folder on the engine's host ({config.host}), "
                        "not checked from this machine",
                    )
                ],
            )
        ]
    return folder_checks([(context.name_of("STOREBASE"), config.storebase, "")])


def storage_volume(config: EngineConfig) -> Finding:
    engine = DockerEngine(DockerEngine.client(config, "engine"), config, "engine")
    try:
        folder = engine.storebase()
    except PmanError as e:
        return problem(
            "storage volume",
            e.message,
            "create the volume (`docker volume create <name>`) and set VOLUME_NAME to it, or "
            "start pfcon with its storeBase volume",
        )
    finally:
        engine.close()
    return ok("storage volume", f"job data in {folder} on the engine's host")
