"""One Docker Engine API endpoint, as every backend that speaks that API uses
it: the container backends (a Docker engine, Podman's compatible service)
and the swarm backend (a Docker swarm manager) each hold one.

It owns the connection (DOCKER_HOST, the API version, the time-out), the
translation of the SDK's errors, and what does not depend on how a job is
run: the image pull, the storage volume's folder on the engine's host, the
logs endpoints (a container's or a service's, demultiplexed a whole line at
a time) and the event stream.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import docker
import docker.errors
from docker.utils import kwargs_from_env, parse_repository_tag

from pman.backends.docker.config import EngineConfig
from pman.backends.docker.errors import translator
from pman.backends.docker.events import EngineEvents, JobOfEvent
from pman.backends.docker.logs import demultiplex, demultiplex_stream
from pman.backends.docker.state import ENDED_EVENTS
from pman.backends.kit.streams import LogStream, shutdown_response
from pman.errors import BackendError, BackendUnavailable, InvalidJobSpec, JobNotFound, PmanError

log = logging.getLogger(__name__)

#: Where pfcon mounts the storebase volume (upstream's convention), used to
#: find the volume from pfcon's container when VOLUME_NAME is not given.
PFCON_STOREBASE_DESTINATION = "/var/local/storeBase"
#: how often a followed service's state is checked, and how long its last
#: lines get to arrive once it has ended
FOLLOW_POLL_S = 1.0
FOLLOW_DRAIN_S = 1.0


class DockerEngine:
    """The Engine API at ``config``'s address; ``name`` says what answers
    there ("Docker engine", "Podman service"...) in every message."""

    def __init__(self, api: docker.APIClient, config: EngineConfig, name: str) -> None:
        self.api = api
        self.config = config
        self.name = name
        #: wraps every engine call: the SDK's errors become pman's
        self.errors = translator(self.describe(), config.timeout)
        self._volume_base: str | None = None
        self._volume_lock = threading.Lock()

    @staticmethod
    def client(config: EngineConfig, name: str) -> docker.APIClient:
        """A client for the engine at ``config``'s address; no network call yet."""
        kwargs = kwargs_from_env(environment=config.environment)
        try:
            return docker.APIClient(**kwargs, version=config.api_version, timeout=config.timeout)
        except docker.errors.DockerException as e:
            raise BackendUnavailable(f"cannot set up a client for the {name}: {e}") from e

    def describe(self) -> str:
        # the SDK shows a unix socket as http+docker://localhost: name the real address
        return f"{self.name} at {self.config.host}"

    def close(self) -> None:
        self.api.close()

    # ---------------------------------------------------------------- errors
    def no_job(self, name: str) -> JobNotFound:
        return JobNotFound(f"no job named {name!r} on the {self.name}")

    @contextlib.contextmanager
    def about(self, name: str, doing: str) -> Iterator[None]:
        """Translate the block's errors; the engine not finding what it was asked
        about means there is no job ``name``."""
        with self.errors.doing(doing):
            try:
                yield
            except docker.errors.NotFound as e:
                raise self.no_job(name) from e

    # ---------------------------------------------------------------- storage
    def storebase(self) -> str:
        """STOREBASE as a path on the engine's host (found once for docker volumes)."""
        if self.config.storage_type == "host":
            assert self.config.storebase is not None
            return str(self.config.storebase)
        with self._volume_lock:
            if self._volume_base is None:
                self._volume_base = self._find_volume()
            return self._volume_base

    def check_storage(self) -> None:
        """Fail as a ping would if the storage volume cannot be found."""
        if self.config.storage_type == "docker_local_volume":
            self.storebase()

    def _find_volume(self) -> str:
        with self.errors.doing("looking up the storage volume"):
            try:
                return self._volume_folder()
            except docker.errors.NotFound as e:
                raise BackendError(f"volume {self.config.volume_name!r} does not exist") from e

    def _volume_folder(self) -> str:
        c = self.config
        if c.volume_name:
            attrs = self.api.inspect_volume(c.volume_name)
            if attrs.get("Driver") != "local":
                raise BackendError(
                    f"volume {c.volume_name!r} uses driver {attrs.get('Driver')!r}; "
                    "STORAGE_TYPE=docker_local_volume needs the local driver"
                )
            return str(attrs["Mountpoint"])
        found = self.api.containers(filters={"label": c.pfcon_selector})
        if not found:
            raise BackendError(
                f"STORAGE_TYPE=docker_local_volume: no VOLUME_NAME and no container "
                f"labelled {c.pfcon_selector!r} to find the volume from"
            )
        for mount in found[0].get("Mounts", []):
            if mount.get("Destination") == PFCON_STOREBASE_DESTINATION:
                return str(mount["Source"])
        raise BackendError(
            f"container {found[0]['Id'][:12]} has no mount at {PFCON_STOREBASE_DESTINATION}"
        )

    # ---------------------------------------------------------------- images
    def image_missing(self, image: str, why: str) -> InvalidJobSpec:
        return InvalidJobSpec(
            f"image {image!r} is not on the {self.name} and could not be pulled: {why}",
            fields={"image": "not present and not pullable"},
        )

    def pull(self, image: str) -> None:
        """Pull ``image``; InvalidJobSpec (naming the image) if the engine cannot.
        Errors other than the engine's answers are left to the caller."""
        repository, tag = parse_repository_tag(image)
        try:
            # A pull reports failure inside its progress stream (Podman always does)
            for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise self.image_missing(image, str(event["error"]))
        except docker.errors.APIError as e:
            raise self.image_missing(image, str(e.explanation or e)) from e

    # ---------------------------------------------------------------- logs
    def read_logs(self, kind: str, name: str, tail: int) -> str:
        """The last ``tail`` lines of a container's or a service's output
        (``kind``: "containers" or "services").

        One request: the SDK's own call inspects first, to learn whether there
        is a TTY, and pman never gives one."""
        if tail <= 0:
            return ""
        with self.about(name, f"reading the logs of {name!r}"):
            res = self.api._get(
                self.api._url(f"/{kind}/{{0}}/logs", name),
                params={"stdout": 1, "stderr": 1, "tail": tail, "timestamps": 0},
            )
            self.api._raise_for_status(res)
        return demultiplex(res.content).decode("utf-8", errors="replace")

    def stream_logs(
        self,
        kind: str,
        name: str,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        ended: Callable[[], bool] | None = None,
    ) -> Iterator[bytes]:
        """The logs endpoint of a container or a service, streamed: the request
        is made here (errors before the first chunk), the body is read frame
        by frame as the returned iterator is iterated.

        ``ended``: for an engine that follows for ever (a service: new tasks
        may come), a watcher thread asks it every FOLLOW_POLL_S whether the
        job has ended (JobNotFound: gone) and then ends the stream, after
        FOLLOW_DRAIN_S for the last lines in flight."""
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "timestamps": 0,
            "follow": int(follow),
            "tail": "all" if tail is None else tail,
        }
        if since is not None:
            params["since"] = f"{since.timestamp():.9f}"
        with self.about(name, f"reading the logs of {name!r}"):
            res = self.api._get(
                self.api._url(f"/{kind}/{{0}}/logs", name),
                params=params,
                stream=True,
                # a followed job may be quiet for long: the stream ends with the job
                timeout=None if follow else self.config.timeout,
            )
            self.api._raise_for_status(res)
        return LogStream(
            self._frames(res, name, ended if follow else None),
            on_abort=lambda: shutdown_response(res),
        )

    def _frames(self, res: Any, name: str, ended: Callable[[], bool] | None) -> Iterator[bytes]:
        """The demultiplexed body of a logs response; with ``ended``, a watcher
        ends it once the job has ended. The watcher stops with the generator."""
        done = threading.Event()
        if ended is not None:
            watcher = threading.Thread(
                target=self._end_with_job, args=(res, ended, done), daemon=True
            )
            watcher.start()
        try:
            with self.errors.doing(f"streaming the logs of {name!r}"):
                yield from demultiplex_stream(res.raw.read)
        except PmanError:
            if not done.is_set():  # not the watcher's own shutdown
                raise
        finally:
            done.set()
            res.close()  # a client that went away closes the engine's stream too

    def _end_with_job(self, res: Any, ended: Callable[[], bool], done: threading.Event) -> None:
        while not done.wait(FOLLOW_POLL_S):
            try:
                over = ended()
            except JobNotFound:
                over = True
            except PmanError:
                continue  # the reader sees an engine outage itself
            if over:
                if not done.wait(FOLLOW_DRAIN_S):
                    done.set()
                    with contextlib.suppress(Exception):
                        # wakes the reader blocked in recv (close() would not)
                        sock = self.api._get_raw_response_socket(res)
                        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
                return

    # ---------------------------------------------------------------- events
    def events(
        self, filters: dict[str, Any], job_of: JobOfEvent, changed: frozenset[str]
    ) -> EngineEvents:
        """The engine's events that ``filters`` selects, as job names."""
        with self.errors.doing("opening its event stream"):
            stream = self.api.events(filters=filters, decode=True)
        return EngineEvents(stream, job_of, ENDED_EVENTS, changed)
