"""Jobs as containers on a Docker Engine, or on Podman's Docker-compatible API.

Uses the docker SDK's low-level APIClient: a submit is exactly one create and
one start (plus a pull only when the image is missing), a status is one
inspect.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import docker
import docker.errors

from pman.backends.base import SINGLE, Backend, Capabilities, ChangeStream
from pman.backends.docker import manifest
from pman.backends.docker.config import DockerConfig
from pman.backends.docker.engine import DockerEngine
from pman.backends.docker.errors import name_taken, start_refusal
from pman.backends.docker.state import (
    ACTIVE_STATUSES,
    CHANGED_EVENTS,
    job_info_from_inspect,
    job_info_from_summary,
    job_of_event,
)
from pman.errors import JobExists, JobNotFound, UnsupportedOption
from pman.labels import LABEL_MANAGED
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: seconds a cancelled container gets between SIGTERM and SIGKILL
CANCEL_GRACE_S = 5


class DockerBackend(Backend):
    name = "docker"
    #: what answers at DOCKER_HOST, in messages
    engine_name: ClassVar[str] = "Docker engine"
    # Docker's container-name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (two characters at least)
    name_pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,127}")
    name_rule = (
        "2 to 128 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )
    #: whether the engine reliably sets State.OOMKilled
    oom_reported: ClassVar[bool] = True
    #: the unfinished states, as the engine's list ``status`` filter spells them
    active_status_filter: ClassVar[tuple[str, ...]] = ACTIVE_STATUSES

    def __init__(self, config: DockerConfig, api: docker.APIClient) -> None:
        self.config = config
        self.engine = DockerEngine(api, config.engine, self.engine_name)
        self.api = api
        self.errors = self.engine.errors

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerBackend:
        config = DockerConfig.from_settings(settings)
        return cls(config, DockerEngine.client(config.engine, cls.engine_name))

    def describe(self) -> str:
        return self.engine.describe()

    def close(self) -> None:
        self.engine.close()

    @property
    def capabilities(self) -> Capabilities:
        """One container per job; GPUs through the engine's device requests."""
        return Capabilities(gpus=True, max_workers=1, array_workers=False)

    # ---------------------------------------------------------------- submit
    def check(self, spec: JobSpec) -> None:
        if spec.resources.number_of_workers != 1:
            raise UnsupportedOption(
                f"the {self.name} backend runs one container per job "
                f"(number_of_workers must be 1, got {spec.resources.number_of_workers})",
                fields={"number_of_workers": "must be 1"},
            )

    def submit(self, spec: JobSpec) -> JobInfo:
        self.check(spec)
        with self.errors.doing(f"creating container {spec.name!r}"):
            try:
                cid = self._create(spec)
            except docker.errors.APIError as e:
                # Docker says 409; Podman 500 with "already in use"
                if e.status_code == 409 or "already in use" in str(e.explanation):
                    raise JobExists(
                        name_taken("container", spec.name),
                        existing=self._owned_info_or_none(spec.name),
                    ) from e
                raise
        started_at = datetime.now(UTC)
        with self.errors.doing(f"starting container {spec.name!r}"):
            try:
                self.api.start(cid)
            except Exception as e:
                self._discard(cid)
                refusal = start_refusal(e, spec, self.engine_name)
                if refusal is not None:
                    raise refusal from e
                raise
        return JobInfo(
            name=spec.name,
            state=JobState.RUNNING,
            image=spec.image,
            command=spec.command,
            message="started",
            created_at=started_at,
            started_at=started_at,
            fingerprint=spec.fingerprint,
            native_id=cid,
        )

    def _create(self, spec: JobSpec) -> str:
        """Create the job's container, pulling its image if the engine lacks it."""
        host_config = manifest.host_config(
            spec, self.config.jobs, self.engine.storebase(), self.api.api_version
        )
        options = manifest.create_options(spec)
        try:
            return str(self.api.create_container(**options, host_config=host_config)["Id"])
        except docker.errors.NotFound:
            # Docker says ImageNotFound; Podman's wording makes the SDK say NotFound
            self.engine.pull(spec.image)
        try:
            return str(self.api.create_container(**options, host_config=host_config)["Id"])
        except docker.errors.NotFound as e:
            raise self.engine.image_missing(spec.image, str(e.explanation or e)) from e

    def _discard(self, cid: str) -> None:
        """Remove a container that will never run, so a failed submit leaves nothing."""
        try:
            self.api.remove_container(cid, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception:
            log.exception("could not remove container %s after a failed start", cid)

    # ---------------------------------------------------------------- state
    def _inspect_owned(self, name: str) -> dict[str, Any]:
        """Inspect a container pman created; others are not jobs and stay untouched."""
        with self.engine.about(name, f"inspecting {name!r}"):
            attrs: dict[str, Any] = self.api.inspect_container(name)
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "true" or attrs.get("Name", "").lstrip("/") != name:
            raise self.engine.no_job(name)
        return attrs

    def _owned_info_or_none(self, name: str) -> JobInfo | None:
        try:
            return self._info(self._inspect_owned(name))
        except JobNotFound:
            return None

    def get(self, name: str) -> JobInfo:
        return self._info(self._inspect_owned(name))

    def _info(self, attrs: dict[str, Any]) -> JobInfo:
        return job_info_from_inspect(attrs, self.oom_reported, self.config.never_started_after)

    def logs(self, name: str, tail: int) -> str:
        return self.engine.read_logs("containers", name, tail)

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        self._inspect_owned(name)
        return self.engine.stream_logs("containers", name, tail, since, follow)

    def cancel(self, name: str) -> None:
        """Stop the container (SIGTERM, SIGKILL after CANCEL_GRACE_S) and keep it,
        with its logs; stopping a stopped container is a no-op for the engine."""
        with self.engine.about(name, f"stopping {name!r}"):
            cid = self._inspect_owned(name)["Id"]
            self.api.stop(cid, timeout=CANCEL_GRACE_S)

    def delete(self, name: str) -> None:
        with contextlib.suppress(JobNotFound), self.engine.about(name, f"removing {name!r}"):
            # by id: the name could be taken by another container in between
            cid = self._inspect_owned(name)["Id"]
            self.api.remove_container(cid, force=True, v=True)

    def _list(self, statuses: list[str] | None) -> list[JobInfo]:
        filters: dict[str, Any] = {"label": f"{LABEL_MANAGED}=true"}
        if statuses:
            filters["status"] = statuses
        with self.errors.doing("listing pman's containers"):
            found = self.api.containers(all=True, filters=filters)
        return [job_info_from_summary(c, self.config.never_started_after) for c in found]

    def list(self) -> list[JobInfo]:
        return self._list(None)

    def list_active(self) -> list[JobInfo]:
        return self._list(list(self.active_status_filter))

    def watch(self) -> ChangeStream:
        # no "event" filter: Podman applies a list of them unlike Docker
        filters = {"type": "container", "label": f"{LABEL_MANAGED}=true"}
        return self.engine.events(filters, job_of_event, CHANGED_EVENTS)

    def ping(self) -> None:
        with self.errors.doing("answering a ping"):
            self.api.ping()
            self.engine.check_storage()


class PodmanBackend(DockerBackend):
    """The same adapter against ``podman system service`` (Docker-compatible API)."""

    name = "podman"
    engine_name = "Podman service"
    # Podman 4 on cgroup v1 leaves OOMKilled false after an OOM kill
    oom_reported = False
    # Podman's compatible API refuses "restarting" in the filter (pman jobs never restart)
    active_status_filter = ("created", "running", "paused")

    @property
    def capabilities(self) -> Capabilities:
        return SINGLE

    def check(self, spec: JobSpec) -> None:
        if spec.resources.gpu_limit > 0:
            # Podman's Docker-compatible API accepts DeviceRequests and ignores
            # them: refuse rather than run the job without its GPUs.
            raise UnsupportedOption(
                "the Podman backend cannot give a job GPUs (gpu_limit must be 0): "
                "Podman's Docker-compatible API ignores GPU requests",
                fields={"gpu_limit": "must be 0 on Podman"},
            )
        super().check(spec)
