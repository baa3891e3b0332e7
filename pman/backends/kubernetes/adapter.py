"""Jobs as Kubernetes batch/v1 Jobs: the Backend wiring the API client
(:mod:`.client`), the Job builder (:mod:`.manifest`), the state decisions
(:mod:`.state`), the pod logs (:mod:`.logs`) and the Job watch (:mod:`.watch`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes.client

from pman.backends.base import Backend, ChangeStream
from pman.backends.kit.times import parse_time
from pman.backends.kubernetes.client import KubeClient, api_client
from pman.backends.kubernetes.config import KubernetesConfig
from pman.backends.kubernetes.logs import PodLogs
from pman.backends.kubernetes.manifest import check_env, job_manifest
from pman.backends.kubernetes.state import has_ended, job_info, pods_by_job
from pman.backends.kubernetes.watch import JobEvents
from pman.errors import JobExists, JobNotFound
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings


class KubernetesBackend(Backend):
    name = "kubernetes"
    # A Job's name becomes a label value of its pods: a DNS-1123 label
    name_pattern = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
    name_rule = (
        "a DNS-1123 label: 1 to 63 characters, lower-case letters, digits and '-', "
        "starting and ending with a letter or digit"
    )

    def __init__(self, client: kubernetes.client.ApiClient, config: KubernetesConfig) -> None:
        self.client = client
        self.config = config
        self.namespace = config.namespace
        self.kube = KubeClient(client, config.namespace, config.timeout)
        self.pod_logs = PodLogs(self.kube, config.pending_timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBackend:
        config = KubernetesConfig.from_settings(settings)
        return cls(api_client(config), config)

    def describe(self) -> str:
        return self.kube.describe()

    def close(self) -> None:
        self.kube.close()

    # ---------------------------------------------------------------- submit
    def check(self, spec: JobSpec) -> None:
        """Kubernetes runs several workers (an Indexed Job) and GPUs (an
        extended resource; whether a node has them only the scheduler knows):
        what it refuses for certain is an environment variable's name."""
        check_env(spec)

    def manifest(self, spec: JobSpec) -> dict[str, Any]:
        """The batch/v1 Job for ``spec`` (no API call)."""
        return job_manifest(spec, self.config)

    def submit(self, spec: JobSpec) -> JobInfo:
        self.check(spec)
        created = self.kube.create_job(self.manifest(spec))
        if created is None:
            raise JobExists(
                f"a Job named {spec.name!r} exists already in namespace {self.namespace!r}",
                existing=self.find(spec.name),
            )
        return JobInfo(
            name=spec.name,
            state=JobState.QUEUED,
            image=spec.image,
            command=spec.command,
            message="submitted to Kubernetes",
            created_at=parse_time(created.get("metadata", {}).get("creationTimestamp"))
            or datetime.now(UTC),
            fingerprint=spec.fingerprint,
            native_id=created.get("metadata", {}).get("uid"),
            labels=spec.labels,
        )

    # ---------------------------------------------------------------- state
    def _job(self, name: str) -> dict[str, Any]:
        """A Job pman created; others are not jobs and stay untouched."""
        job = self.kube.owned_job(name)
        if job is None:
            raise JobNotFound(f"no job named {name!r} in Kubernetes namespace {self.namespace!r}")
        return job

    def get(self, name: str) -> JobInfo:
        job = self._job(name)
        return job_info(job, self.kube.pods_of(job), self.config.pending_timeout, datetime.now(UTC))

    def list(self) -> list[JobInfo]:
        """Every pman Job and all their pods, in two API calls."""
        jobs = self.kube.managed_jobs()
        by_job = pods_by_job(self.kube.managed_pods())
        now = datetime.now(UTC)
        return [
            job_info(
                job,
                by_job.get(job["metadata"].get("uid", ""), []),
                self.config.pending_timeout,
                now,
            )
            for job in jobs
        ]

    def watch(self) -> ChangeStream:
        return JobEvents(self.kube.watch_jobs())

    def ping(self) -> None:
        self.kube.ping()

    # ---------------------------------------------------------------- logs
    def logs(self, name: str, tail: int) -> str:
        if tail <= 0:
            return ""
        return self.pod_logs.tail(self._job(name), tail)

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        return self.pod_logs.stream(self._job(name), tail, since, follow)

    # ---------------------------------------------------------------- stop
    def cancel(self, name: str) -> None:
        """Suspend the Job (``spec.suspend=true``): the Job controller deletes
        its running pods and keeps the Job, with a Suspended condition. The
        pods' logs go with them: pman keeps the last lines it read before."""
        if not has_ended(self._job(name)):
            self.kube.suspend_job(name)

    def delete(self, name: str) -> None:
        job = self.kube.owned_job(name)
        if job is not None:
            self.kube.delete_job(name, job["metadata"]["uid"])
