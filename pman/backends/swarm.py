"""Jobs as Docker Swarm services: one replicated service per pman job.

A job of N workers is a service in "replicated" mode with N replicas and
restart condition "none": each worker runs exactly once, whatever it exits
with, and nothing brings it back. Docker's own job mode ("replicated-job",
API 1.41) was tried first and is NOT used: on Docker 20.10 a replicated job
of two or more tasks re-runs a failed task for ever, ignoring the restart
policy, and the tasks and containers of a removed job linger
(moby/moby#42789).

Each worker learns its index from ``PMAN_WORKER_INDEX``, the task's slot
``{{.Task.Slot}}``: 1..N, one per worker (replicated services number their
slots from 1), and the number of workers from ``PMAN_NUMBER_OF_WORKERS``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

import docker
import docker.errors
from docker.types import (
    ContainerSpec,
    DriverConfig,
    Mount,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from pman.backends.base import ChangeStream, Outcome
from pman.backends.docker import ContainerEvents, DockerBackend, parse_engine_time
from pman.errors import (
    BackendUnavailable,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_MANAGED
from pman.models import INCOMING, OUTGOING, JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: Swarm task ``Status.State`` -> JobState of that one task.
#: https://docs.docker.com/engine/swarm/how-swarm-mode-works/swarm-task-states/
#: https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Task
#: A "pending" task that stays so past PMAN_SWARM_PENDING_TIMEOUT (no node has
#: the resources, say) is a SYSTEM_ERROR, see ``job_state``.
TASK_STATES: dict[str, JobState] = {
    "new": JobState.QUEUED,
    "allocated": JobState.QUEUED,
    "pending": JobState.QUEUED,
    "assigned": JobState.QUEUED,
    "accepted": JobState.QUEUED,
    "preparing": JobState.QUEUED,
    "ready": JobState.QUEUED,
    "starting": JobState.QUEUED,
    "running": JobState.RUNNING,
    "complete": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    # stopped by the swarm on request: the service was removed or changed
    "shutdown": JobState.CANCELLED,
    # the node refused the task: image missing, bad mount...
    "rejected": JobState.SYSTEM_ERROR,
    # its node went away while it ran
    "orphaned": JobState.SYSTEM_ERROR,
    # on its way out: the tracker sees how it ends
    "remove": JobState.UNKNOWN,
}

#: the label Docker puts on a task's container naming its service
_SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
_SERVICE_ID_LABEL = "com.docker.swarm.service.id"
_MIB = 1024 * 1024
#: a worker's index 1..N: the slot of its task, which the swarm expands in env values
WORKER_INDEX_TEMPLATE = "{{.Task.Slot}}"


def escape_template(text: str) -> str:
    """``text`` as a Go template that expands to itself: the swarm expands
    templates in env values and mount sources, and a job's own ``{{`` must
    reach it unchanged."""
    return text.replace("{{", '{{"{{"}}')


def _worker_index(task: dict[str, Any]) -> int:
    return int(task.get("Slot") or 0)


def nfs_mount(server: str, path: str, target: str, read_only: bool) -> Mount:
    """A volume of the local driver that mounts ``server:path`` over NFS on
    whichever node runs the task. Its name digests the options, as a volume
    that exists already keeps the options it was created with."""
    mode = "ro" if read_only else "rw"
    options = {"type": "nfs", "o": f"addr={server},{mode}", "device": f":{path}"}
    digest = hashlib.sha256(f"{server}\0{path}\0{mode}".encode()).hexdigest()[:24]
    return Mount(
        target,
        f"pman-nfs-{digest}",
        type="volume",
        read_only=read_only,
        driver_config=DriverConfig("local", options),
    )


def gpu_kinds(nodes: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The most GPUs any one node advertises, by generic resource kind.

    Nodes advertise generic resources as ``DiscreteResourceSpec`` (a count)
    or one ``NamedResourceSpec`` per device (dockerd's node-generic-resources,
    e.g. ``NVIDIA-GPU=GPU-uuid``); a kind naming "gpu" counts as GPUs.
    """
    best: dict[str, int] = {}
    for node in nodes:
        if (node.get("Status") or {}).get("State", "ready") != "ready":
            continue
        if (node.get("Spec") or {}).get("Availability", "active") != "active":
            continue
        counts: dict[str, int] = {}
        resources = (node.get("Description") or {}).get("Resources") or {}
        for res in resources.get("GenericResources") or []:
            for key, spec in res.items():
                kind = str(spec.get("Kind", ""))
                if "gpu" not in kind.lower():
                    continue
                n = int(spec.get("Value", 0)) if key == "DiscreteResourceSpec" else 1
                counts[kind] = counts.get(kind, 0) + n
        for kind, n in counts.items():
            best[kind] = max(best.get(kind, 0), n)
    return best


def choose_gpu_kind(nodes: Iterable[dict[str, Any]], count: int) -> str:
    """The generic resource kind to ask ``count`` GPUs of; UnsupportedOption
    (naming gpu_limit) when no node could ever give that many."""
    kinds = gpu_kinds(nodes)
    fitting = sorted(kind for kind, n in kinds.items() if n >= count)
    if not fitting:
        have = ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())) or "none"
        raise UnsupportedOption(
            f"gpu_limit={count} cannot be met: no swarm node advertises that many GPUs "
            f"as generic resources (most on one node: {have})",
            fields={"gpu_limit": "no swarm node has that many GPUs"},
        )
    return fitting[0]


def _task_text(task: dict[str, Any]) -> str:
    st = task.get("Status") or {}
    return str(st.get("Err") or st.get("Message") or st.get("State", ""))


def job_state(
    tasks: list[dict[str, Any]],
    workers: int,
    memory_limit: int,
    pending_timeout: float,
    now: datetime,
) -> Outcome:
    """The job's state from all of its tasks.

    A job is decided once every worker has ended (a task that stays pending
    past ``pending_timeout`` seconds counts as ended: it may never run), so
    that its output folder is final when pman calls it finished; then a
    rejection or a task that never started is a SYSTEM_ERROR with the swarm's
    own text, a failed worker a FAILED job, and success needs every worker's.
    """
    ended: list[tuple[dict[str, Any], JobState]] = []
    live: list[JobState] = []
    for task in sorted(tasks, key=_worker_index):
        st = task.get("Status") or {}
        name = str(st.get("State", "")).lower()
        state = TASK_STATES.get(name)
        if state is None:
            log.warning("unknown swarm task state %r of task %s", name, task.get("ID"))
            state = JobState.UNKNOWN
        if name == "pending":
            since = parse_engine_time(task.get("CreatedAt"))
            if since is not None and (now - since).total_seconds() > pending_timeout:
                ended.append((task, JobState.SYSTEM_ERROR))
                continue
        if state.finished:
            ended.append((task, state))
        else:
            live.append(state)
    if live or len(ended) < workers:
        if JobState.RUNNING in live or any(s.finished for _, s in ended):
            return Outcome(JobState.RUNNING, message="running")
        if JobState.UNKNOWN in live:
            return Outcome(JobState.UNKNOWN, "unknown_status", "swarm task state unknown")
        return Outcome(JobState.QUEUED, message="waiting for the swarm to start it")

    for wanted in (JobState.SYSTEM_ERROR, JobState.FAILED, JobState.CANCELLED):
        for task, state in ended:
            if state is wanted:
                return _ended_outcome(task, state, memory_limit, pending_timeout, workers)
    return Outcome(
        JobState.SUCCEEDED,
        message="exited with code 0" if workers == 1 else f"all {workers} workers exited with 0",
        exit_code=0,
    )


def _ended_outcome(
    task: dict[str, Any], state: JobState, memory_limit: int, pending_timeout: float, workers: int
) -> Outcome:
    st = task.get("Status") or {}
    text = _task_text(task)
    who = f"worker {_worker_index(task)}: " if workers > 1 else ""
    code = (st.get("ContainerStatus") or {}).get("ExitCode")
    name = str(st.get("State", "")).lower()
    if name == "pending":
        return Outcome(
            JobState.SYSTEM_ERROR,
            "not_scheduled",
            f"{who}the swarm could not place the job within {pending_timeout:g} s: {text}",
        )
    if name == "rejected":
        return Outcome(JobState.SYSTEM_ERROR, "rejected", f"{who}rejected by the swarm: {text}")
    if state is JobState.SYSTEM_ERROR:
        return Outcome(JobState.SYSTEM_ERROR, name, f"{who}{name}: {text}")
    if state is JobState.CANCELLED:
        return Outcome(JobState.CANCELLED, "shutdown", f"{who}stopped by the swarm: {text}")
    # failed: a task that never got to "started" could not run at all
    if st.get("Message") != "started" and str(st.get("Err", "")).startswith("starting container"):
        return Outcome(JobState.SYSTEM_ERROR, "start_failed", f"{who}could not start: {text}", code)
    if code == 137 and memory_limit:
        return Outcome(
            JobState.FAILED,
            "killed",
            f"{who}killed by SIGKILL (exit code 137), most likely out of memory "
            f"(memory_limit {memory_limit // _MIB} MiB)",
            code,
        )
    return Outcome(JobState.FAILED, "exit_code", f"{who}exited with code {code}: {text}", code)


def _workers_of(service: dict[str, Any]) -> int:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    if "Replicated" in mode:
        return int(mode["Replicated"].get("Replicas") or 1)
    job = mode.get("ReplicatedJob") or {}
    return int(job.get("TotalCompletions") or 1)


def job_info(
    service: dict[str, Any],
    tasks: list[dict[str, Any]],
    pending_timeout: float,
    now: datetime | None = None,
) -> JobInfo:
    """A service and its tasks as a JobInfo."""
    spec = service.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    limits = (template.get("Resources") or {}).get("Limits") or {}
    labels = spec.get("Labels") or {}
    outcome = job_state(
        tasks,
        _workers_of(service),
        int(limits.get("MemoryBytes") or 0),
        pending_timeout,
        now or datetime.now(UTC),
    )
    ran = [
        t
        for t in tasks
        if str((t.get("Status") or {}).get("State")) in ("running", "complete", "failed")
    ]
    # tasks keep the time of their latest state only: the start of the first
    # worker is known while it runs; afterwards its creation is the nearest
    started = min(
        (
            parse_engine_time(
                (t.get("Status") or {}).get("Timestamp")
                if (t.get("Status") or {}).get("State") == "running"
                else t.get("CreatedAt")
            )
            for t in ran
        ),
        default=None,
        key=lambda d: d or datetime.max.replace(tzinfo=UTC),
    )
    finished = None
    if outcome.state.finished:
        finished = max(
            (parse_engine_time((t.get("Status") or {}).get("Timestamp")) for t in tasks),
            default=None,
            key=lambda d: d or datetime.min.replace(tzinfo=UTC),
        )
    return JobInfo(
        name=str(spec.get("Name", "")),
        state=outcome.state,
        image=labels.get(LABEL_IMAGE) or str(container.get("Image", "")),
        command=[*(container.get("Command") or []), *(container.get("Args") or [])],
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        message=outcome.message,
        created_at=parse_engine_time(service.get("CreatedAt")),
        started_at=started,
        finished_at=finished,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=service.get("ID"),
        labels=labels,
    )


class _SwarmEvents(ContainerEvents):
    """Docker's /events stream as names of pman's jobs that may have ended.

    Containers carry pman's labels and their service's name; service events
    carry no labels, so a removed service is named whoever made it (the
    tracker only looks at names it knows). Task state changes (a rejection)
    have no events: the tracker's safety-net poll finds those.
    """

    CHANGED = frozenset({"create", "start", "update"})

    def job_of(self, event: dict[str, Any]) -> str | None:
        attributes = event.get("Actor", {}).get("Attributes", {})
        if event.get("Type") == "container":
            if attributes.get(LABEL_MANAGED) != "true":
                return None
            return str(attributes.get(_SERVICE_NAME_LABEL, ""))
        return str(attributes.get("name", ""))


class SwarmBackend(DockerBackend):
    name = "swarm"
    engine = "Docker swarm manager"
    # Docker service names are DNS labels: letters, digits, '-' and '_',
    # starting and ending with a letter or digit, at most 63 characters
    name_pattern = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")
    name_rule = (
        "1 to 63 characters: letters, digits, '_', '-', starting and ending with a letter or digit"
    )

    def __init__(self, api: docker.APIClient, settings: Settings) -> None:
        super().__init__(api, settings)
        self.pending_timeout = settings.swarm_pending_timeout

    # ---------------------------------------------------------------- errors
    def _raise(self, e: Exception, doing: str) -> NoReturn:
        if isinstance(e, docker.errors.APIError) and "not a swarm manager" in str(
            e.explanation or e
        ):
            raise BackendUnavailable(
                f"{self.describe()} is not a swarm manager (run `docker swarm init` there, "
                f"or point DOCKER_HOST at a manager) while {doing}: {e.explanation}"
            ) from e
        super()._raise(e, doing)

    # ---------------------------------------------------------------- submit
    def _mounts(self, spec: JobSpec) -> list[Mount]:
        s = self.settings
        m = spec.mounts
        if s.storage_type == "nfs":
            assert s.nfs_server is not None and s.storebase is not None
            base = str(s.storebase).rstrip("/")
            incoming = f"{base}/{m.input_dir}".rstrip("/")
            mounts = [
                nfs_mount(s.nfs_server, incoming, INCOMING, read_only=True),
                nfs_mount(s.nfs_server, f"{base}/{m.output_dir}", OUTGOING, read_only=False),
            ]
        else:
            # host folders, or the local volume's folder on this node (as DockerBackend)
            base = self._storebase()
            incoming = str(m.input_host) if m.input_host else f"{base}/{m.input_dir}".rstrip("/")
            outgoing = str(m.output_host) if m.output_host else f"{base}/{m.output_dir}"
            mounts = [
                Mount(INCOMING, escape_template(incoming), type="bind", read_only=True),
                Mount(OUTGOING, escape_template(outgoing), type="bind", read_only=False),
            ]
        if s.shm_size is not None:
            mounts.append(Mount("/dev/shm", None, type="tmpfs", tmpfs_size=s.shm_size * _MIB))
        if s.read_only_rootfs:
            mounts.append(Mount("/tmp", None, type="tmpfs", tmpfs_mode=0o1777))
        return mounts

    def _resources(self, spec: JobSpec) -> Resources | None:
        r = spec.resources
        generic = None
        if r.gpu_limit > 0:
            try:
                nodes = self.api.nodes()
            except Exception as e:
                self._raise(e, "listing the swarm's nodes for their GPUs")
            generic = {choose_gpu_kind(nodes, r.gpu_limit): r.gpu_limit}
        if self.settings.ignore_limits:
            return Resources(generic_resources=generic) if generic else None
        # reservations as large as the limits: the scheduler places a job only
        # on a node that has what it may use
        return Resources(
            cpu_limit=r.cpu_limit * 1_000_000,
            mem_limit=r.memory_limit * _MIB,
            cpu_reservation=r.cpu_limit * 1_000_000,
            mem_reservation=r.memory_limit * _MIB,
            generic_resources=generic,
        )

    def task_template(self, spec: JobSpec) -> TaskTemplate:
        """The service's task template for ``spec`` (no engine call unless GPUs are asked)."""
        user = None
        groups = None
        if spec.uid is not None:
            user = str(spec.uid) if spec.gid is None else f"{spec.uid}:{spec.gid}"
        elif spec.gid is not None:
            groups = [str(spec.gid)]
        env = [escape_template(e) for e in spec.env]
        env += [
            f"PMAN_WORKER_INDEX={WORKER_INDEX_TEMPLATE}",
            f"PMAN_NUMBER_OF_WORKERS={spec.resources.number_of_workers}",
        ]
        container = ContainerSpec(
            spec.image,
            command=spec.command[:1],
            args=spec.command[1:],
            env=env,
            user=user,
            groups=groups,
            labels=spec.labels,
            mounts=self._mounts(spec),
            # every capability dropped but PMAN_CAP_ADD's (API 1.41). Docker 20.10's
            # service API has no no-new-privileges (Privileges.NoNewPrivileges
            # came with API 1.46): with an empty bounding set a setuid file gains
            # a job no capability, only another uid.
            cap_drop=["ALL"],
            cap_add=list(self.settings.cap_add) or None,
            read_only=self.settings.read_only_rootfs or None,
        )
        return TaskTemplate(
            container,
            resources=self._resources(spec),
            restart_policy=RestartPolicy(condition="none"),
        )

    def submit(self, spec: JobSpec) -> JobInfo:
        n = spec.resources.number_of_workers
        try:
            template = self.task_template(spec)
            created = self.api.create_service(
                template,
                name=spec.name,
                labels=spec.labels,
                mode=ServiceMode("replicated", replicas=n),
            )
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise self._name_taken(spec, "service") from e
            self._raise(e, f"creating service {spec.name!r}")
        except Exception as e:
            self._raise(e, f"creating service {spec.name!r}")
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
        try:
            service = self.api.inspect_service(name)
        except docker.errors.NotFound as e:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}") from e
        except Exception as e:
            self._raise(e, f"inspecting service {name!r}")
        spec = service.get("Spec") or {}
        # inspect also matches an id or an id prefix: insist on the name
        if (spec.get("Labels") or {}).get(LABEL_MANAGED) != "true" or spec.get("Name") != name:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}")
        return service

    def _tasks(self, service_ids: list[str]) -> list[dict[str, Any]]:
        # by service id: a task's "label" filter matches its service's labels,
        # but it also lists tasks of removed job-mode services that linger in
        # the swarm (moby/moby#42789)
        if not service_ids:
            return []
        try:
            return self.api.tasks(filters={"service": service_ids})
        except Exception as e:
            self._raise(e, "listing the swarm's tasks")

    def _oom_killed(self, tasks: list[dict[str, Any]]) -> bool:
        """Whether a worker killed with 137 had its container OOM-killed; only
        containers on this node can be asked (others count as unknown: no)."""
        for task in tasks:
            cs = (task.get("Status") or {}).get("ContainerStatus") or {}
            if cs.get("ExitCode") == 137 and cs.get("ContainerID"):
                try:
                    attrs = self.api.inspect_container(cs["ContainerID"])
                except docker.errors.NotFound:
                    continue
                except Exception as e:
                    self._raise(e, "inspecting a worker's container")
                if (attrs.get("State") or {}).get("OOMKilled"):
                    return True
        return False

    def _owned_info_or_none(self, name: str) -> JobInfo | None:
        try:
            return self.get(name)
        except JobNotFound:
            return None

    def get(self, name: str) -> JobInfo:
        service = self._service_owned(name)
        tasks = self._tasks([service["ID"]])
        info = job_info(service, tasks, self.pending_timeout)
        if info.reason == "killed" and self._oom_killed(tasks):
            limits = (service["Spec"]["TaskTemplate"].get("Resources") or {}).get("Limits") or {}
            mib = int(limits.get("MemoryBytes") or 0) // _MIB
            who = info.message.split(": ", 1)[0] + ": " if info.message.startswith("worker") else ""
            info = replace(
                info,
                reason="oom_killed",
                message=f"{who}killed: out of memory (memory_limit {mib} MiB), "
                f"exit code {info.exit_code}",
            )
        return info

    def logs(self, name: str, tail: int) -> str:
        # a TTY's CRs never reach pman's callers
        text = self._read_logs("services", name, tail).replace("\r", "")
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
        tail, the engine's tail applies per worker."""
        self._service_owned(name)
        return self._stream_logs("services", name, tail, since, follow)

    def cancel(self, name: str) -> None:
        """Scale the service to 0 replicas: the swarm shuts its tasks down and
        keeps their containers (and so the logs) until DELETE removes it."""
        service = self._service_owned(name)
        if job_info(service, self._tasks([service["ID"]]), self.pending_timeout).state.finished:
            return
        try:
            self.api.update_service(
                service["ID"],
                service["Version"]["Index"],
                mode=ServiceMode("replicated", replicas=0),
                fetch_current_spec=True,
            )
        except docker.errors.NotFound as e:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}") from e
        except Exception as e:
            self._raise(e, f"scaling service {name!r} to 0")

    def delete(self, name: str) -> None:
        try:
            service_id = self._service_owned(name)["ID"]
        except JobNotFound:
            return
        try:
            self.api.remove_service(service_id)
        except docker.errors.NotFound:
            pass
        except Exception as e:
            self._raise(e, f"removing service {name!r}")
        # the swarm removes the containers of a service's tasks, but not at
        # once, and leaves those of ended job-mode tasks (moby/moby#42789):
        # remove those on this node now, so that a deleted job leaves nothing
        try:
            found = self.api.containers(
                all=True, filters={"label": f"{_SERVICE_ID_LABEL}={service_id}"}
            )
        except Exception as e:
            self._raise(e, f"listing the containers of {name!r}")
        for c in found:
            try:
                self.api.remove_container(c["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if e.status_code != 409:  # 409: the swarm is removing it already
                    self._raise(e, f"removing a container of {name!r}")
            except Exception as e:
                self._raise(e, f"removing a container of {name!r}")

    def list(self) -> list[JobInfo]:
        """Every pman service and its tasks in two engine calls."""
        try:
            services = self.api.services(filters={"label": f"{LABEL_MANAGED}=true"})
        except Exception as e:
            self._raise(e, "listing pman's services")
        by_service: dict[str, list[dict[str, Any]]] = {s["ID"]: [] for s in services}
        for task in self._tasks(list(by_service)):
            by_service.get(task.get("ServiceID", ""), []).append(task)
        now = datetime.now(UTC)
        return [job_info(s, by_service[s["ID"]], self.pending_timeout, now) for s in services]

    def watch(self) -> ChangeStream:
        try:
            # no label filter: service events carry no labels (see _SwarmEvents)
            stream = self.api.events(filters={"type": ["container", "service"]}, decode=True)
        except Exception as e:
            self._raise(e, "opening its event stream")
        return _SwarmEvents(stream)

    def ping(self) -> None:
        try:
            self.api.ping()
            swarm = self.api.info().get("Swarm") or {}
            if self.settings.storage_type == "docker_local_volume":
                self._storebase()
        except PmanError:
            raise
        except Exception as e:
            self._raise(e, "answering a ping")
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise BackendUnavailable(
                f"{self.describe()} is not a swarm manager "
                f"(Swarm.LocalNodeState={swarm.get('LocalNodeState')!r}): run "
                "`docker swarm init` there, or point DOCKER_HOST at a manager"
            )
