"""What the Kubernetes backend reads from pman's settings, read once.

Everything the adapter, its API client and the Job builder use is here; none
of them reads :class:`~pman.settings.Settings` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pman.backends.kubernetes.settings import KubernetesSettings

if TYPE_CHECKING:
    from pman.settings import Resource, Settings
    from pman.settings.core import CoreSettings


@dataclass(frozen=True)
class KubernetesConfig:
    """How pman reaches the Kubernetes API, and what every Job it writes holds."""

    # -- the API
    #: the namespace of pman's Jobs (JOB_NAMESPACE)
    namespace: str
    #: seconds an API call may take (PMAN_ENGINE_TIMEOUT)
    timeout: float
    #: KUBECONFIG: the client configuration file; None: in-cluster inside a
    #: pod, else ~/.kube/config
    kubeconfig: str | None
    #: whether pman runs inside a Kubernetes pod (KUBERNETES_SERVICE_HOST is set)
    in_cluster: bool
    #: seconds a pod may wait to start on something that does not resolve by
    #: itself before its job is a system error (PMAN_KUBERNETES_PENDING_TIMEOUT)
    pending_timeout: float

    # -- the Job
    #: host, nfs or kubernetes_pvc (STORAGE_TYPE)
    storage_type: str
    #: STOREBASE: where job data lives on the nodes (host) or the server (nfs)
    storebase: Path | None
    #: NFS_SERVER (nfs storage)
    nfs_server: str | None
    #: VOLUME_NAME: the PersistentVolumeClaim holding job data (kubernetes_pvc)
    volume_name: str | None
    #: SHM_SIZE in MiB: a memory-backed /dev/shm of that size; None: the runtime's
    shm_size: int | None
    #: IGNORE_LIMITS: no cpu and memory limits (GPUs are still asked for)
    ignore_limits: bool
    #: KUBERNETES_GPU_RESOURCE: the extended resource a GPU is
    gpu_resource: str
    #: SECURITYCONTEXT_RUN_AS_USER / _GROUP: a job's user and group when its
    #: request gives none (CONTAINER_USER)
    run_as_user: int | None
    run_as_group: int | None
    #: NODE_SELECTOR, TOLERATIONS, IMAGE_PULL_SECRETS of every job's pod
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, Any], ...]
    image_pull_secrets: tuple[str, ...]
    #: TIMELIMIT_MINUTES: a Job's activeDeadlineSeconds, in minutes
    timelimit_minutes: int
    #: JOB_TTL_SECONDS: a finished Job's ttlSecondsAfterFinished
    job_ttl_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesConfig:
        return cls.from_resource(settings.resource, settings.core)

    @classmethod
    def from_resource(cls, resource: Resource, core: CoreSettings) -> KubernetesConfig:
        """The configuration of a resource that runs ``kubernetes`` (JOB_LABELS
        that are no Kubernetes labels were refused when the settings were
        read: KubernetesSettings.check)."""
        kube = resource.engine_as(KubernetesSettings)
        storage, jobs = resource.storage, resource.jobs
        return cls(
            namespace=kube.namespace,
            timeout=core.engine_timeout,
            kubeconfig=kube.kubeconfig,
            in_cluster=kube.in_cluster,
            pending_timeout=kube.pending_timeout,
            storage_type=storage.storage_type,
            storebase=storage.storebase,
            nfs_server=storage.nfs_server,
            volume_name=storage.volume_name,
            shm_size=jobs.shm_size,
            ignore_limits=jobs.ignore_limits,
            gpu_resource=kube.gpu_resource,
            run_as_user=kube.run_as_user,
            run_as_group=kube.run_as_group,
            node_selector=dict(kube.node_selector),
            tolerations=tuple(dict(t) for t in kube.tolerations),
            image_pull_secrets=tuple(kube.image_pull_secrets),
            timelimit_minutes=jobs.timelimit_minutes,
            job_ttl_seconds=kube.job_ttl_seconds,
        )
