"""Jobs as Docker Swarm services: one replicated service per pman job (see
:mod:`pman.backends.swarm.manifest`), on a swarm manager reached as the
docker backend reaches its engine (:class:`~pman.backends.docker.engine.DockerEngine`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import docker
import docker.errors
from docker.types import ServiceMode, TaskTemplate

from pman.backends.base import Backend, ChangeStream
from pman.backends.docker.engine import DockerEngine
from pman.backends.docker.errors import name_taken
from pman.backends.docker.state import (
    ACTIVE_STATUSES,
    job_info_from_summary,
    never_started_after,
)
from pman.backends.swarm import manifest
from pman.backends.swarm.config import SwarmConfig
from pman.backends.swarm.state import (
    CHANGED_EVENTS,
    job_info,
    job_of_event,
    killed_containers,
    oom_killed,
)
from pman.errors import BackendUnavailable, JobExists, JobNotFound
from pman.labels import LABEL_MANAGED
from pman.models import JobInfo, JobSpec, JobState, Reason
from pman.settings import Settings

#: the label Docker puts on a task's container naming its service's id
SERVICE_ID_LABEL = "com.docker.swarm.service.id"


class SwarmBackend(Backend):
    name = "swarm"
    #: what answers at DOCKER_HOST, in messages
    engine_name: ClassVar[str] = "Docker swarm manager"
    # Docker service names are DNS labels: letters, digits, '-' and '_',
    # starting and ending with a letter or digit, at most 63 characters
    name_pattern = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")
    name_rule = (
        "1 to 63 characters: letters, digits, '_', '-', starting and ending with a letter or digit"
    )

    def __init__(self, config: SwarmConfig, api: docker.APIClient) -> None:
        self.config = config
        self.engine = DockerEngine(api, config.engine, self.engine_name)
        self.api = api
        self.errors = self.engine.errors

    @classmethod
    def from_settings(cls, settings: Settings) -> SwarmBackend:
        config = SwarmConfig.from_settings(settings)
        return cls(config, DockerEngine.client(config.engine, cls.engine_name))

    def describe(self) -> str:
        return self.engine.describe()

    def close(self) -> None:
        self.engine.close()

    # ---------------------------------------------------------------- submit
    def task_template(self, spec: JobSpec) -> TaskTemplate:
        """The service's task template for ``spec`` (no engine call unless GPUs are
        asked or the storage is a docker volume not looked up yet)."""
        storebase = None if self.config.engine.storage_type == "nfs" else self.engine.storebase()
        gpu_kind = None
        if spec.resources.gpu_limit > 0:
            with self.errors.doing("listing the swarm's nodes for their GPUs"):
                nodes = self.api.nodes()
            gpu_kind = manifest.choose_gpu_kind(nodes, spec.resources.gpu_limit)
        return manifest.task_template(spec, self.config, storebase, gpu_kind)

    def submit(self, spec: JobSpec) -> JobInfo:
        self.check(spec)
        with self.errors.doing(f"creating service {spec.name!r}"):
            try:
                template = self.task_template(spec)
                created = self.api.create_service(template, **manifest.service_options(spec))
            except docker.errors.APIError as e:
                if e.status_code == 409:
                    raise JobExists(
                        name_taken("service", spec.name),
                        existing=self.find(spec.name),
                    ) from e
                raise
        now = datetime.now(UTC)
        return JobInfo(
            name=spec.name,
            state=JobState.QUEUED,
            image=spec.image,
            command=spec.command,
            message="submitted to the swarm",
            created_at=now,
            fingerprint=spec.fingerprint,
            native_id=created.get("ID"),
            labels=spec.labels,
        )

    # ---------------------------------------------------------------- state
    def _service_owned(self, name: str) -> dict[str, Any]:
        """Inspect a service pman created; others are not jobs and stay untouched."""
        with self.engine.about(name, f"inspecting service {name!r}"):
            service: dict[str, Any] = self.api.inspect_service(name)
        spec = service.get("Spec") or {}
        # inspect also matches an id or an id prefix: insist on the name
        if (spec.get("Labels") or {}).get(LABEL_MANAGED) != "true" or spec.get("Name") != name:
            raise self.engine.no_job(name)
        return service

    def _tasks(self, service_ids: list[str]) -> list[dict[str, Any]]:
        # by service id: a task's "label" filter matches its service's labels,
        # but it also lists tasks of removed job-mode services that linger in
        # the swarm (moby/moby#42789)
        if not service_ids:
            return []
        with self.errors.doing("listing the swarm's tasks"):
            tasks: list[dict[str, Any]] = self.api.tasks(filters={"service": service_ids})
        return tasks

    def _oom_killed(self, tasks: list[dict[str, Any]]) -> bool:
        """Whether a worker killed with 137 had its container OOM-killed; only
        containers on this node can be asked (others count as unknown: no)."""
        for cid in killed_containers(tasks):
            with self.errors.doing("inspecting a worker's container"):
                try:
                    attrs = self.api.inspect_container(cid)
                except docker.errors.NotFound:
                    continue
            if (attrs.get("State") or {}).get("OOMKilled"):
                return True
        return False

    def get(self, name: str) -> JobInfo:
        service = self._service_owned(name)
        tasks = self._tasks([service["ID"]])
        info = job_info(service, tasks, self.config.pending_timeout)
        if info.reason is Reason.KILLED and self._oom_killed(tasks):
            info = oom_killed(info, service)
        return info

    def logs(self, name: str, tail: int) -> str:
        # a TTY's CRs never reach pman's callers
        text = self.engine.read_logs("services", name, tail).replace("\r", "")
        # the engine's tail applies per worker: keep the job's last ``tail`` lines
        return "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The service's logs (every worker's, as the engine merges them); with a
        tail, the engine's tail applies per worker. The engine follows a
        service for ever (new tasks may come): a followed log ends once the
        job has ended."""
        self._service_owned(name)
        return self.engine.stream_logs(
            "services", name, tail, since, follow, ended=lambda: self.get(name).state.finished
        )

    def cancel(self, name: str) -> None:
        """Scale the service to 0 replicas: the swarm shuts its tasks down and
        keeps their containers (and so the logs) until DELETE removes it."""
        service = self._service_owned(name)
        tasks = self._tasks([service["ID"]])
        if job_info(service, tasks, self.config.pending_timeout).state.finished:
            return
        with self.engine.about(name, f"scaling service {name!r} to 0"):
            self.api.update_service(
                service["ID"],
                service["Version"]["Index"],
                mode=ServiceMode("replicated", replicas=0),
                fetch_current_spec=True,
            )

    def delete(self, name: str) -> None:
        try:
            service_id = self._service_owned(name)["ID"]
        except JobNotFound:
            return
        doing = f"removing service {name!r}"
        with self.errors.doing(doing), contextlib.suppress(docker.errors.NotFound):
            self.api.remove_service(service_id)
        # the swarm removes the containers of a service's tasks, but not at
        # once, and leaves those of ended job-mode tasks (moby/moby#42789):
        # remove those on this node now, so that a deleted job leaves nothing
        with self.errors.doing(f"listing the containers of {name!r}"):
            found = self.api.containers(
                all=True, filters={"label": f"{SERVICE_ID_LABEL}={service_id}"}
            )
        for c in found:
            with self.errors.doing(f"removing a container of {name!r}"):
                try:
                    self.api.remove_container(c["Id"], force=True, v=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    if e.status_code != 409:  # 409: the swarm is removing it already
                        raise

    def list(self) -> list[JobInfo]:
        """Every pman service and its tasks in two engine calls."""
        with self.errors.doing("listing pman's services"):
            services = self.api.services(filters={"label": f"{LABEL_MANAGED}=true"})
        by_service: dict[str, list[dict[str, Any]]] = {s["ID"]: [] for s in services}
        for task in self._tasks(list(by_service)):
            by_service.get(task.get("ServiceID", ""), []).append(task)
        now = datetime.now(UTC)
        pending = self.config.pending_timeout
        return [job_info(s, by_service[s["ID"]], pending, now) for s in services]

    def list_active(self) -> list[JobInfo]:
        """What this backend's list of unfinished jobs has always been (it was
        inherited from the docker backend): pman's unfinished CONTAINERS, the
        tasks' containers, whose names are not job names; so the tracker asks
        ``get`` about every unfinished job each cycle."""
        filters = {"label": f"{LABEL_MANAGED}=true", "status": list(ACTIVE_STATUSES)}
        with self.errors.doing("listing pman's containers"):
            found = self.api.containers(all=True, filters=filters)
        after = never_started_after(self.config.engine.timeout)
        return [job_info_from_summary(c, after) for c in found]

    def watch(self) -> ChangeStream:
        # no label filter: service events carry no labels (see state.job_of_event)
        filters = {"type": ["container", "service"]}
        return self.engine.events(filters, job_of_event, CHANGED_EVENTS)

    def ping(self) -> None:
        with self.errors.doing("answering a ping"):
            self.api.ping()
            swarm = self.api.info().get("Swarm") or {}
            self.engine.check_storage()
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise BackendUnavailable(
                f"{self.describe()} is not a swarm manager "
                f"(Swarm.LocalNodeState={swarm.get('LocalNodeState')!r}): run "
                "`docker swarm init` there, or point DOCKER_HOST at a manager"
            )
