"""The batch/v1 Job pman writes for a job, built without an API call.

One Indexed Job per pman job: completions = parallelism = number_of_workers,
backoffLimit 0 (a failed worker fails the job; nothing re-runs), restartPolicy
Never, activeDeadlineSeconds from TIMELIMIT_MINUTES, ttlSecondsAfterFinished
from JOB_TTL_SECONDS. Each worker gets ``PMAN_WORKER_INDEX``, its completion
index 0..N-1 (the annotation Kubernetes puts on the pod), and
``PMAN_NUMBER_OF_WORKERS``. Also the Kubernetes syntax rules pman checks
before the API would refuse a name (labels, environment variables).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pman.errors import InvalidJobSpec
from pman.labels import LABEL_MANAGED
from pman.models import INCOMING, OUTGOING, JobSpec

if TYPE_CHECKING:
    from pman.backends.kubernetes.config import KubernetesConfig

#: the pod annotation holding a worker's index in an Indexed Job
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: the one container of a job's pod
CONTAINER_NAME = "job"
#: Kubernetes label values: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def is_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(_LABEL_NAME.fullmatch(name))


def is_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(value))


def escape_expansion(text: str) -> str:
    """``text`` such that Kubernetes' ``$(VAR)`` expansion of command, args and
    env values gives it back unchanged (``$$`` reduces to ``$``)."""
    return text.replace("$", "$$")


def unescape(text: str) -> str:
    """What :func:`escape_expansion` was given."""
    return text.replace("$$", "$")


def check_env(spec: JobSpec) -> None:
    """InvalidJobSpec (field ``env``) for a variable name Kubernetes refuses."""
    for item in spec.env:
        key = item.partition("=")[0]
        if not _ENV_NAME.fullmatch(key):
            raise InvalidJobSpec(
                f"env {item!r}: {key!r} is not a name Kubernetes accepts for an "
                "environment variable (letters, digits, '_', '-', '.', not starting "
                "with a digit)",
                fields={"env": "invalid variable name"},
            )


def _volumes(
    spec: JobSpec, config: KubernetesConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container volumeMounts) for the job's data and /dev/shm."""
    m = spec.mounts
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    if config.storage_type == "kubernetes_pvc":
        volumes = [
            {"name": "storebase", "persistentVolumeClaim": {"claimName": config.volume_name}}
        ]
        incoming = {"name": "storebase", "mountPath": INCOMING, "readOnly": True}
        if m.input_dir:
            incoming["subPath"] = m.input_dir
        mounts = [
            incoming,
            {"name": "storebase", "mountPath": OUTGOING, "subPath": m.output_dir},
        ]
    else:
        base = str(config.storebase).rstrip("/")
        in_path = str(m.input_host) if m.input_host else f"{base}/{m.input_dir}".rstrip("/")
        out_path = str(m.output_host) if m.output_host else f"{base}/{m.output_dir}"
        if config.storage_type == "nfs":
            sources = [
                {"nfs": {"server": config.nfs_server, "path": in_path, "readOnly": True}},
                {"nfs": {"server": config.nfs_server, "path": out_path}},
            ]
        else:
            sources = [
                {"hostPath": {"path": in_path, "type": "Directory"}},
                {"hostPath": {"path": out_path, "type": "DirectoryOrCreate"}},
            ]
        volumes = [{"name": "incoming", **sources[0]}, {"name": "outgoing", **sources[1]}]
        mounts = [
            {"name": "incoming", "mountPath": INCOMING, "readOnly": True},
            {"name": "outgoing", "mountPath": OUTGOING},
        ]
    if config.shm_size is not None:
        volumes.append(
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{config.shm_size}Mi"}}
        )
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _env(spec: JobSpec) -> list[dict[str, Any]]:
    check_env(spec)
    env: list[dict[str, Any]] = []
    for item in spec.env:
        key, _, value = item.partition("=")
        env.append({"name": key, "value": escape_expansion(value)})
    env.append(
        {
            "name": "PMAN_WORKER_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
        }
    )
    env.append({"name": "PMAN_NUMBER_OF_WORKERS", "value": str(spec.resources.number_of_workers)})
    return env


def _resources(spec: JobSpec, config: KubernetesConfig) -> dict[str, Any]:
    r = spec.resources
    limits: dict[str, str] = {}
    if not config.ignore_limits:
        limits = {"cpu": f"{r.cpu_limit}m", "memory": f"{r.memory_limit}Mi"}
    if r.gpu_limit > 0:
        limits[config.gpu_resource] = str(r.gpu_limit)
    # requests as large as the limits: a job is placed only on a node that has
    # what it may use, and gets the Guaranteed QoS class (evicted last)
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _security(spec: JobSpec, config: KubernetesConfig) -> dict[str, Any]:
    # the container runtime's default seccomp filter, which Kubernetes
    # leaves off unless asked (Docker applies its own by default)
    pod: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    uid = spec.uid if spec.uid is not None else config.run_as_user
    gid = spec.gid if spec.gid is not None else config.run_as_group
    if uid is not None:
        pod["runAsUser"] = uid
        if uid != 0:
            pod["runAsNonRoot"] = True
    if gid is not None:
        pod["runAsGroup"] = gid
    return pod


def job_manifest(spec: JobSpec, config: KubernetesConfig) -> dict[str, Any]:
    """The batch/v1 Job for ``spec``; InvalidJobSpec for what Kubernetes would refuse."""
    labels = {k: v for k, v in spec.labels.items() if is_label_key(k) and is_label_value(v)}
    # every pman label also as an annotation: image names, say, are no label values
    annotations = {k: v for k, v in spec.labels.items() if k.startswith(LABEL_MANAGED)}
    volumes, mounts = _volumes(spec, config)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": [escape_expansion(c) for c in spec.command[:1]],
        "args": [escape_expansion(a) for a in spec.command[1:]],
        "env": _env(spec),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(spec, config)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        # jobs have no business with the Kubernetes API
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    pod_spec["securityContext"] = _security(spec, config)
    if config.node_selector:
        pod_spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]
    n = spec.resources.number_of_workers
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "labels": labels, "annotations": annotations},
        "spec": {
            "completionMode": "Indexed",
            "completions": n,
            "parallelism": n,
            "backoffLimit": 0,
            "activeDeadlineSeconds": config.timelimit_minutes * 60,
            "ttlSecondsAfterFinished": config.job_ttl_seconds,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
