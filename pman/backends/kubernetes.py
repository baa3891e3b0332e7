"""Jobs as Kubernetes batch/v1 Jobs, through the official ``kubernetes`` client.

One Indexed Job per pman job: completions = parallelism = number_of_workers,
backoffLimit 0 (a failed worker fails the job; nothing re-runs), restartPolicy
Never, activeDeadlineSeconds from TIMELIMIT_MINUTES, ttlSecondsAfterFinished
from JOB_TTL_SECONDS. Each worker gets ``PMAN_WORKER_INDEX``, its completion
index 0..N-1 (the annotation Kubernetes puts on the pod), and
``PMAN_NUMBER_OF_WORKERS``.

Objects are read as the API's own JSON (``_preload_content=False``): the
state is computed from the same camelCase fields the Kubernetes docs describe,
and a tracker cycle over many jobs does not pay for the client's model classes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import kubernetes.client
import kubernetes.config
import urllib3
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pman.backends.base import Backend, ChangeStream, Outcome
from pman.backends.kit.files import LOG_CHUNK
from pman.backends.kit.streams import LogStream, shutdown_response
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
)
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_JID, LABEL_MANAGED
from pman.models import INCOMING, OUTGOING, JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: Pod ``status.phase`` -> the state of that one worker.
#: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-phase
#: A Job's own end is read from its conditions (``Complete``, ``Failed`` with
#: a reason), see ``job_state``; container waiting reasons that never resolve
#: by themselves are in ``STUCK_REASONS``.
POD_PHASES: dict[str, JobState] = {
    "Pending": JobState.QUEUED,
    "Running": JobState.RUNNING,
    "Succeeded": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
    "Unknown": JobState.UNKNOWN,
}

#: Container ``state.waiting.reason`` values after which a pod only starts if
#: someone fixes something (pushes the image, creates the secret): once a pod
#: has waited so past PMAN_KUBERNETES_PENDING_TIMEOUT its job is a SYSTEM_ERROR.
#: https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff
STUCK_REASONS: dict[str, str] = {
    "ErrImagePull": "image_pull_failed",
    "ImagePullBackOff": "image_pull_failed",
    "InvalidImageName": "image_pull_failed",
    "ErrImageNeverPull": "image_pull_failed",
    "CreateContainerConfigError": "config_error",
    "CreateContainerError": "start_failed",
    "RunContainerError": "start_failed",
}

#: the pod annotation holding a worker's index in an Indexed Job
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
#: Kubernetes label values: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_MIB = 1024 * 1024
#: the one container of a job's pod
CONTAINER_NAME = "job"
#: seconds a watch request lasts before pman opens a new one
WATCH_SECONDS = 300


#: how often a followed job whose pod has not started is asked about again
FOLLOW_POLL_S = 1.0


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


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _index(pod: dict[str, Any]) -> int:
    annotations = pod.get("metadata", {}).get("annotations") or {}
    try:
        return int(annotations.get(INDEX_ANNOTATION, 0))
    except ValueError:
        return 0


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER_NAME:
            return cs
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The object's conditions whose status is "True", by type."""
    return {
        c.get("type", ""): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }


def _finished_at(pod: dict[str, Any]) -> str | None:
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    return terminated.get("finishedAt")


def _unschedulable(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return c
    return None


def _failed_pod_outcome(pod: dict[str, Any], memory_mib: int, who: str) -> Outcome:
    """Why a pod of phase Failed failed."""
    st = pod.get("status") or {}
    if st.get("reason") == "Evicted":
        return Outcome(
            JobState.SYSTEM_ERROR,
            "evicted",
            f"{who}evicted by Kubernetes: {st.get('message') or 'no message'}",
        )
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        return Outcome(
            JobState.FAILED,
            "oom_killed",
            f"{who}killed: out of memory (memory_limit {memory_mib} MiB), exit code {code}",
            code,
        )
    if st.get("reason") == "DeadlineExceeded":
        return Outcome(JobState.FAILED, "time_limit", f"{who}killed: {st.get('message')}", code)
    if code is None:
        text = st.get("message") or st.get("reason") or "no container status"
        return Outcome(JobState.FAILED, "pod_failed", f"{who}pod failed: {text}")
    detail = terminated.get("message") or ""
    return Outcome(
        JobState.FAILED,
        "exit_code",
        f"{who}exited with code {code}" + (f": {detail.strip()}" if detail.strip() else ""),
        code,
    )


def _stuck(
    pod: dict[str, Any], now: datetime, pending_timeout: float, who: str
) -> tuple[Outcome | None, str]:
    """(an error outcome if the pod has waited too long to start, its wait in words)."""
    waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    since = parse_time(pod.get("metadata", {}).get("creationTimestamp"))
    overdue = since is not None and (now - since).total_seconds() > pending_timeout
    if reason:
        text = f"{reason}: {waiting['message']}" if waiting.get("message") else reason
        if reason in STUCK_REASONS and overdue:
            return Outcome(
                JobState.SYSTEM_ERROR,
                STUCK_REASONS[reason],
                f"{who}could not start within {pending_timeout:g} s: {text}",
            ), text
        return None, text
    cond = _unschedulable(pod)
    if cond is not None:
        text = f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}"
        if overdue:
            return Outcome(
                JobState.SYSTEM_ERROR,
                "not_scheduled",
                f"{who}Kubernetes could not place the job within {pending_timeout:g} s: {text}",
            ), text
        return None, text
    return None, ""


def job_state(
    job: dict[str, Any],
    pods: list[dict[str, Any]],
    pending_timeout: float,
    now: datetime,
) -> Outcome:
    """The job's state from the Job's conditions and its pods.

    The Job controller's conditions decide the end (``Complete``; ``Failed``
    with reason DeadlineExceeded or BackoffLimitExceeded); the pods say why a
    job failed (exit code, OOMKilled, Evicted) and whether one that has not
    started is stuck (image pull, config error, unschedulable). A Job the
    controller has not counted yet (no status at all) is queued.
    """
    spec = job.get("spec") or {}
    workers = int(spec.get("completions") or 1)
    container = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    memory = ((container[0].get("resources") or {}).get("limits") or {}).get("memory", "")
    memory_mib = _mebibytes(str(memory))
    pods = sorted(pods, key=_index)

    def who(pod: dict[str, Any]) -> str:
        return f"worker {_index(pod)}: " if workers > 1 else ""

    # only the final conditions: FailureTarget and SuccessCriteriaMet come
    # while pods may still be terminating, and the output is not final yet
    conditions = _conditions(job)
    # pman suspends a Job to cancel it: the controller deletes its pods, which
    # may count as failed ones (a Failed condition may follow): cancelled
    live = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if spec.get("suspend") and "Suspended" in conditions and not live:
        return Outcome(JobState.CANCELLED, "suspended", "cancelled: the Job is suspended")
    if "Complete" in conditions:
        return Outcome(
            JobState.SUCCEEDED,
            message="exited with code 0"
            if workers == 1
            else f"all {workers} workers exited with 0",
            exit_code=0,
        )
    failed = conditions.get("Failed")
    if failed is not None:
        if failed.get("reason") == "DeadlineExceeded":
            minutes = int(spec.get("activeDeadlineSeconds") or 0) / 60
            return Outcome(
                JobState.FAILED,
                "time_limit",
                f"killed: ran longer than its time limit of {minutes:g} minutes "
                f"(TIMELIMIT_MINUTES): {failed.get('message', '')}",
            )
        # the worker that failed first is the cause; the others were stopped for it
        failed_pods = sorted(
            (p for p in pods if (p.get("status") or {}).get("phase") == "Failed"),
            key=lambda p: (_finished_at(p) or "~", _index(p)),
        )
        for pod in failed_pods:
            outcome = _failed_pod_outcome(pod, memory_mib, who(pod))
            if outcome.reason != "pod_failed":
                return outcome
        if failed_pods:
            return _failed_pod_outcome(failed_pods[0], memory_mib, who(failed_pods[0]))
        return Outcome(
            JobState.FAILED,
            "job_failed",
            f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}",
        )

    waits: list[str] = []
    for pod in live:
        error, text = _stuck(pod, now, pending_timeout, who(pod))
        if error is not None:
            return error
        if text:
            waits.append(f"{who(pod)}{text}")
    phases = {
        POD_PHASES.get(str((p.get("status") or {}).get("phase")), JobState.UNKNOWN) for p in pods
    }
    if JobState.RUNNING in phases or (phases & {JobState.SUCCEEDED, JobState.FAILED}):
        return Outcome(JobState.RUNNING, message="running")
    if JobState.UNKNOWN in phases:
        return Outcome(JobState.UNKNOWN, "unknown_status", "a pod's state is Unknown")
    if not job.get("status"):
        return Outcome(JobState.QUEUED, message="waiting for the Job controller")
    if waits:
        return Outcome(JobState.QUEUED, message="; ".join(waits))
    return Outcome(JobState.QUEUED, message="waiting for its pods to start")


_QUANTITY = re.compile(r"(\d+)([KMGTE]i?)?")
_QUANTITY_BYTES = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def _mebibytes(quantity: str) -> int:
    """A memory quantity as pman writes it (``128Mi``) in MiB; 0 if unreadable."""
    m = _QUANTITY.fullmatch(quantity)
    if not m or m.group(2) not in _QUANTITY_BYTES:
        return 0
    return int(m.group(1)) * _QUANTITY_BYTES[m.group(2)] // _MIB


def job_info(
    job: dict[str, Any], pods: list[dict[str, Any]], pending_timeout: float, now: datetime
) -> JobInfo:
    """A Job and its pods as a JobInfo."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    container = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    labels = {**(meta.get("labels") or {}), **_pman_annotations(meta)}
    outcome = job_state(job, pods, pending_timeout, now)
    started = [
        parse_time(s.get("startedAt"))
        for p in pods
        for s in (
            (_container_status(p).get("state") or {}).get(k) for k in ("running", "terminated")
        )
        if s and s.get("startedAt")
    ]
    finished = None
    if outcome.state.finished:
        status = job.get("status") or {}
        ended = _conditions(job).get("Complete") or _conditions(job).get("Failed") or {}
        finished = parse_time(status.get("completionTime") or ended.get("lastTransitionTime"))
    return JobInfo(
        name=str(meta.get("name", "")),
        state=outcome.state,
        image=labels.get(LABEL_IMAGE) or str(container[0].get("image", "")),
        command=[
            *(unescape(c) for c in container[0].get("command") or []),
            *(unescape(a) for a in container[0].get("args") or []),
        ],
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        message=outcome.message,
        created_at=parse_time(meta.get("creationTimestamp")),
        started_at=min((s for s in started if s), default=None),
        finished_at=finished,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=meta.get("uid"),
        labels=labels,
    )


def unescape(text: str) -> str:
    return text.replace("$$", "$")


def _pman_annotations(meta: dict[str, Any]) -> dict[str, str]:
    """pman's labels kept as annotations (those whose values are no label values)."""
    return {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k == LABEL_MANAGED or k.startswith(LABEL_MANAGED + ".")
    }


class _JobEvents:
    """A watch on pman's Jobs as the names of those that may have ended or gone."""

    def __init__(self, response: urllib3.HTTPResponse) -> None:
        self._response = response

    def __iter__(self) -> Iterator[str]:
        buffer = b""
        try:
            for chunk in self._response.stream(amt=None, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        return  # e.g. 410 Gone: resourceVersion too old; the caller re-opens
                    obj = event.get("object") or {}
                    name = str((obj.get("metadata") or {}).get("name", ""))
                    ended = event.get("type") == "DELETED" or bool(
                        {"Complete", "Failed", "FailureTarget"} & set(_conditions(obj))
                    )
                    yield name if ended else ""
        except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError):
            return  # the stream broke (or was closed): the caller reconnects

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._response.shutdown()  # wakes a read blocked in another thread
        with contextlib.suppress(Exception):
            self._response.release_conn()


class KubernetesBackend(Backend):
    name = "kubernetes"
    # A Job's name becomes a label value of its pods: a DNS-1123 label
    name_pattern = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
    name_rule = (
        "a DNS-1123 label: 1 to 63 characters, lower-case letters, digits and '-', "
        "starting and ending with a letter or digit"
    )

    def __init__(self, api_client: kubernetes.client.ApiClient, settings: Settings) -> None:
        self.client = api_client
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.settings = settings
        self.namespace = settings.job_namespace
        self.timeout = settings.engine_timeout
        self.pending_timeout = settings.kubernetes_pending_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBackend:
        bad = {
            k: v
            for k, v in settings.job_labels.items()
            if not (is_label_key(k) and is_label_value(v))
        }
        if bad:
            raise ConfigError(
                f"JOB_LABELS {bad} are not valid Kubernetes labels (keys: [prefix/]name, "
                "values: at most 63 letters, digits, '-', '_', '.')",
                fields={"JOB_LABELS": "not valid Kubernetes labels"},
            )
        try:
            if settings.kubeconfig or not settings.kubernetes_in_cluster:
                api_client = kubernetes.config.new_client_from_config(
                    config_file=settings.kubeconfig, persist_config=False
                )
            else:
                configuration = kubernetes.client.Configuration()
                kubernetes.config.load_incluster_config(client_configuration=configuration)
                api_client = kubernetes.client.ApiClient(configuration)
        except (ConfigException, OSError) as e:
            where = settings.kubeconfig or "~/.kube/config"
            raise ConfigError(
                f"cannot load the Kubernetes client configuration ({where}): {e}",
                fields={"KUBECONFIG": str(e)},
            ) from e
        return cls(api_client, settings)

    def describe(self) -> str:
        return f"Kubernetes API at {self.client.configuration.host} (namespace {self.namespace})"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # ---------------------------------------------------------------- errors
    def _raise(self, e: Exception, doing: str) -> NoReturn:
        """The ONE place where client library errors become pman errors."""
        if isinstance(e, PmanError):
            raise e
        where = self.describe()
        if isinstance(e, ApiException):
            status = _status_of(e)
            text = status.get("message") or e.reason or str(e)
            if e.status == 422:
                fields = _fields_of(status)
                raise InvalidJobSpec(
                    f"Kubernetes refused {doing}: {text}", fields=fields or {"jid": text}
                ) from e
            if e.status in (401, 403):
                raise BackendError(
                    f"{where} refused pman's credentials while {doing} ({e.status} "
                    f"{status.get('reason') or e.reason}): {text}. Check the kubeconfig or the "
                    "ServiceAccount's Role (see kubernetes/)",
                    detail=status,
                ) from e
            if e.status in (429, 502, 503, 504) or e.status == 0:
                raise BackendUnavailable(f"{where} is unavailable while {doing}: {text}") from e
            raise BackendError(f"{where} failed {doing}: {text}", detail=status) from e
        if isinstance(e, urllib3.exceptions.TimeoutError):
            raise BackendUnavailable(
                f"{where} did not answer within {self.timeout:g} s while {doing}"
            ) from e
        if isinstance(e, urllib3.exceptions.HTTPError | OSError):
            raise BackendUnavailable(f"{where} is unreachable while {doing}: {e}") from e
        raise BackendError(f"{where} failed {doing}: {e}") from e

    def _call(self, method: Any, doing: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call, its JSON answer as a dict."""
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
            )
            return json.loads(response.data or b"{}")
        except Exception as e:
            self._raise(e, doing)

    # ---------------------------------------------------------------- submit
    def _volumes(self, spec: JobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(pod volumes, container volumeMounts) for the job's data and /dev/shm."""
        s = self.settings
        m = spec.mounts
        volumes: list[dict[str, Any]]
        mounts: list[dict[str, Any]]
        if s.storage_type == "kubernetes_pvc":
            volumes = [{"name": "storebase", "persistentVolumeClaim": {"claimName": s.volume_name}}]
            incoming = {"name": "storebase", "mountPath": INCOMING, "readOnly": True}
            if m.input_dir:
                incoming["subPath"] = m.input_dir
            mounts = [
                incoming,
                {"name": "storebase", "mountPath": OUTGOING, "subPath": m.output_dir},
            ]
        else:
            base = str(s.storebase).rstrip("/")
            in_path = str(m.input_host) if m.input_host else f"{base}/{m.input_dir}".rstrip("/")
            out_path = str(m.output_host) if m.output_host else f"{base}/{m.output_dir}"
            if s.storage_type == "nfs":
                sources = [
                    {"nfs": {"server": s.nfs_server, "path": in_path, "readOnly": True}},
                    {"nfs": {"server": s.nfs_server, "path": out_path}},
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
        if s.shm_size is not None:
            volumes.append(
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{s.shm_size}Mi"}}
            )
            mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        return volumes, mounts

    def _env(self, spec: JobSpec) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = []
        for item in spec.env:
            key, _, value = item.partition("=")
            if not _ENV_NAME.fullmatch(key):
                raise InvalidJobSpec(
                    f"env {item!r}: {key!r} is not a name Kubernetes accepts for an "
                    "environment variable (letters, digits, '_', '-', '.', not starting "
                    "with a digit)",
                    fields={"env": "invalid variable name"},
                )
            env.append({"name": key, "value": escape_expansion(value)})
        env.append(
            {
                "name": "PMAN_WORKER_INDEX",
                "valueFrom": {
                    "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}
                },
            }
        )
        env.append(
            {"name": "PMAN_NUMBER_OF_WORKERS", "value": str(spec.resources.number_of_workers)}
        )
        return env

    def _resources(self, spec: JobSpec) -> dict[str, Any]:
        r = spec.resources
        limits: dict[str, str] = {}
        if not self.settings.ignore_limits:
            limits = {"cpu": f"{r.cpu_limit}m", "memory": f"{r.memory_limit}Mi"}
        if r.gpu_limit > 0:
            limits[self.settings.kubernetes_gpu_resource] = str(r.gpu_limit)
        # requests as large as the limits: a job is placed only on a node that has
        # what it may use, and gets the Guaranteed QoS class (evicted last)
        return {"limits": limits, "requests": dict(limits)} if limits else {}

    def _security(self, spec: JobSpec) -> dict[str, Any]:
        s = self.settings
        # the container runtime's default seccomp filter, which Kubernetes
        # leaves off unless asked (Docker applies its own by default)
        pod: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
        uid = spec.uid if spec.uid is not None else s.securitycontext_run_as_user
        gid = spec.gid if spec.gid is not None else s.securitycontext_run_as_group
        if uid is not None:
            pod["runAsUser"] = uid
            if uid != 0:
                pod["runAsNonRoot"] = True
        if gid is not None:
            pod["runAsGroup"] = gid
        return pod

    def manifest(self, spec: JobSpec) -> dict[str, Any]:
        """The batch/v1 Job for ``spec`` (no API call)."""
        s = self.settings
        labels = {k: v for k, v in spec.labels.items() if is_label_key(k) and is_label_value(v)}
        # every pman label also as an annotation: image names, say, are no label values
        annotations = {k: v for k, v in spec.labels.items() if k.startswith(LABEL_MANAGED)}
        volumes, mounts = self._volumes(spec)
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": spec.image,
            "command": [escape_expansion(c) for c in spec.command[:1]],
            "args": [escape_expansion(a) for a in spec.command[1:]],
            "env": self._env(spec),
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        resources = self._resources(spec)
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
        pod_spec["securityContext"] = self._security(spec)
        if s.node_selector:
            pod_spec["nodeSelector"] = dict(s.node_selector)
        if s.tolerations:
            pod_spec["tolerations"] = [dict(t) for t in s.tolerations]
        if s.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
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
                "activeDeadlineSeconds": s.timelimit_minutes * 60,
                "ttlSecondsAfterFinished": s.job_ttl_seconds,
                "template": {
                    "metadata": {"labels": labels, "annotations": annotations},
                    "spec": pod_spec,
                },
            },
        }

    def submit(self, spec: JobSpec) -> JobInfo:
        body = self.manifest(spec)
        try:
            response = self.batch.create_namespaced_job(
                self.namespace, body, _preload_content=False, _request_timeout=self.timeout
            )
            created = json.loads(response.data)
        except ApiException as e:
            if e.status == 409:
                raise JobExists(
                    f"a Job named {spec.name!r} exists already in namespace {self.namespace!r}",
                    existing=self._owned_info_or_none(spec.name),
                ) from e
            self._raise(e, f"creating Job {spec.name!r}")
        except Exception as e:
            self._raise(e, f"creating Job {spec.name!r}")
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
    def _job_owned(self, name: str) -> dict[str, Any]:
        """Read a Job pman created; others are not jobs and stay untouched."""
        try:
            response = self.batch.read_namespaced_job(
                name, self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
            job = json.loads(response.data)
        except ApiException as e:
            if e.status == 404:
                raise JobNotFound(
                    f"no job named {name!r} in Kubernetes namespace {self.namespace!r}"
                ) from e
            self._raise(e, f"reading Job {name!r}")
        except Exception as e:
            self._raise(e, f"reading Job {name!r}")
        if (job.get("metadata", {}).get("labels") or {}).get(LABEL_MANAGED) != "true":
            raise JobNotFound(f"no job named {name!r} in Kubernetes namespace {self.namespace!r}")
        return job

    def _owned_info_or_none(self, name: str) -> JobInfo | None:
        try:
            return self.get(name)
        except JobNotFound:
            return None

    def _pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        # the Job's own selector (its controller-uid): a Job re-made under the
        # same name never sees the pods of the one before
        match = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        if not selector:
            selector = f"{LABEL_JID}={job['metadata']['name']}"
        found = self._call(
            self.core.list_namespaced_pod,
            f"listing the pods of Job {job['metadata']['name']!r}",
            self.namespace,
            label_selector=selector,
        )
        return found.get("items") or []

    def get(self, name: str) -> JobInfo:
        job = self._job_owned(name)
        return job_info(job, self._pods_of(job), self.pending_timeout, datetime.now(UTC))

    def logs(self, name: str, tail: int) -> str:
        if tail <= 0:
            return ""
        job = self._job_owned(name)
        workers = int((job.get("spec") or {}).get("completions") or 1)
        # the newest pod of each index (a replaced pod's logs are not the job's)
        newest: dict[int, dict[str, Any]] = {}
        for pod in self._pods_of(job):
            i = _index(pod)
            created = pod.get("metadata", {}).get("creationTimestamp") or ""
            if i not in newest or created > newest[i]["metadata"].get("creationTimestamp", ""):
                newest[i] = pod
        lines: list[str] = []
        for i in sorted(newest):
            text = self._pod_log(newest[i]["metadata"]["name"], tail)
            for line in text.splitlines(keepends=True):
                lines.append(f"[worker {i}] {line}" if workers > 1 else line)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines[-tail:])

    def _newest_pods(self, job: dict[str, Any]) -> dict[int, dict[str, Any]]:
        newest: dict[int, dict[str, Any]] = {}
        for pod in self._pods_of(job):
            i = _index(pod)
            created = pod.get("metadata", {}).get("creationTimestamp") or ""
            if i not in newest or created > newest[i]["metadata"].get("creationTimestamp", ""):
                newest[i] = pod
        return newest

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """Each worker's pod log in turn (several workers: each line prefixed
        ``[worker i]``, ``tail`` per worker), streamed with
        ``read_namespaced_pod_log(_preload_content=False)``; following, each
        worker's stream ends with its pod, one not started yet is waited for."""
        job = self._job_owned(name)
        workers = int((job.get("spec") or {}).get("completions") or 1)
        kwargs: dict[str, Any] = {}
        if tail is not None:
            if tail == 0:
                return iter([])
            kwargs["tail_lines"] = tail
        if since is not None:
            seconds = (datetime.now(UTC) - since).total_seconds()
            kwargs["since_seconds"] = max(1, math.ceil(seconds))
        stop = threading.Event()
        #: the pod log being read, which an abort interrupts
        reading: list[urllib3.HTTPResponse] = []

        def abort() -> None:
            stop.set()
            for response in list(reading):
                shutdown_response(response)

        return LogStream(self._worker_logs(name, workers, follow, kwargs, stop, reading), abort)

    def _worker_logs(
        self,
        name: str,
        workers: int,
        follow: bool,
        kwargs: dict[str, Any],
        stop: threading.Event,
        reading: list[urllib3.HTTPResponse],
    ) -> Iterator[bytes]:
        for i in range(1, workers + 1) if workers > 1 else [None]:
            pod = None
            while True:
                try:
                    job = self._job_owned(name)
                except JobNotFound:
                    return  # deleted meanwhile
                pods = self._newest_pods(job)
                pod = pods.get(i if i is not None else min(pods, default=0))
                if (
                    pod is not None
                    or not follow
                    or job_info(
                        job, list(pods.values()), self.pending_timeout, datetime.now(UTC)
                    ).state.finished
                ):
                    break
                if stop.wait(FOLLOW_POLL_S):
                    return
            if pod is None:
                continue
            prefix = f"[worker {i}] ".encode() if i is not None else b""
            response = self._open_pod_log(pod["metadata"]["name"], follow, kwargs, stop)
            if response is None:
                continue
            reading[:] = [response]
            if stop.is_set():  # aborted while it was being opened
                shutdown_response(response)
            try:
                pending = b""
                for data in response.stream(LOG_CHUNK, decode_content=True):
                    if not prefix:
                        yield data
                        continue
                    lines = (pending + data).split(b"\n")
                    pending = lines.pop()
                    if lines:
                        yield b"".join(prefix + line + b"\n" for line in lines)
                    if len(pending) >= LOG_CHUNK:
                        yield prefix + pending
                        pending = b""
                if pending:
                    yield prefix + pending + b"\n"
            except Exception as e:
                self._raise(e, f"streaming the logs of pod {pod['metadata']['name']!r}")
            finally:
                response.release_conn()
                response.close()

    def _open_pod_log(
        self, pod: str, follow: bool, kwargs: dict[str, Any], stop: threading.Event
    ) -> urllib3.HTTPResponse | None:
        """The pod's log response, unread; None for a pod with no log (yet)."""
        while True:
            try:
                return self.core.read_namespaced_pod_log(
                    pod,
                    self.namespace,
                    container=CONTAINER_NAME,
                    follow=follow,
                    _preload_content=False,
                    # a followed pod may be quiet for long: its stream ends with it
                    _request_timeout=None if follow else self.timeout,
                    **kwargs,
                )
            except ApiException as e:
                if e.status == 400 and follow:  # "waiting to start": it will
                    if stop.wait(FOLLOW_POLL_S):
                        return None
                    continue
                if e.status in (400, 404):
                    return None  # not started yet, or gone
                self._raise(e, f"reading the logs of pod {pod!r}")
            except Exception as e:
                self._raise(e, f"reading the logs of pod {pod!r}")

    def cancel(self, name: str) -> None:
        """Suspend the Job (``spec.suspend=true``): the Job controller deletes
        its running pods and keeps the Job, with a Suspended condition. The
        pods' logs go with them: pman keeps the last lines it read before."""
        job = self._job_owned(name)
        conditions = _conditions(job)
        if "Complete" in conditions or "Failed" in conditions:
            return
        self._call(
            self.batch.patch_namespaced_job,
            f"suspending Job {name!r}",
            name,
            self.namespace,
            {"spec": {"suspend": True}},
        )

    def _pod_log(self, pod: str, tail: int) -> str:
        try:
            response = self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=CONTAINER_NAME,
                tail_lines=tail,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            return response.data.decode("utf-8", errors="replace").replace("\r", "")
        except ApiException as e:
            if e.status in (400, 404):
                return ""  # not started yet (400 "waiting to start"), or gone
            self._raise(e, f"reading the logs of pod {pod!r}")
        except Exception as e:
            self._raise(e, f"reading the logs of pod {pod!r}")

    def delete(self, name: str) -> None:
        try:
            uid = self._job_owned(name)["metadata"]["uid"]
        except JobNotFound:
            return
        try:
            self.batch.delete_namespaced_job(
                name,
                self.namespace,
                # Background: the Job goes now, its pods (and their containers) after
                body={"propagationPolicy": "Background", "preconditions": {"uid": uid}},
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as e:
            if e.status in (404, 409):  # gone already, or re-made by someone else meanwhile
                return
            self._raise(e, f"deleting Job {name!r}")
        except Exception as e:
            self._raise(e, f"deleting Job {name!r}")

    def list(self) -> list[JobInfo]:
        """Every pman Job and all their pods, in two API calls."""
        selector = f"{LABEL_MANAGED}=true"
        jobs = self._call(
            self.batch.list_namespaced_job,
            "listing pman's Jobs",
            self.namespace,
            label_selector=selector,
        )
        pods = self._call(
            self.core.list_namespaced_pod,
            "listing pman's pods",
            self.namespace,
            label_selector=selector,
        )
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods.get("items") or []:
            for owner in pod.get("metadata", {}).get("ownerReferences") or []:
                if owner.get("kind") == "Job" and owner.get("controller"):
                    by_job.setdefault(owner.get("uid", ""), []).append(pod)
        now = datetime.now(UTC)
        return [
            job_info(job, by_job.get(job["metadata"].get("uid", ""), []), self.pending_timeout, now)
            for job in jobs.get("items") or []
        ]

    def watch(self) -> ChangeStream:
        selector = f"{LABEL_MANAGED}=true"
        # from the list's resourceVersion: only what changes from now on, not
        # an ADDED event for every Job there is
        listed = self._call(
            self.batch.list_namespaced_job,
            "listing pman's Jobs",
            self.namespace,
            label_selector=selector,
            limit=1,
        )
        try:
            response = self.batch.list_namespaced_job(
                self.namespace,
                label_selector=selector,
                watch=True,
                resource_version=(listed.get("metadata") or {}).get("resourceVersion"),
                timeout_seconds=WATCH_SECONDS,
                allow_watch_bookmarks=False,
                _preload_content=False,
                # connect within the usual time; then reads may wait as long as the watch
                _request_timeout=(self.timeout, WATCH_SECONDS + self.timeout),
            )
        except Exception as e:
            self._raise(e, "opening a watch on pman's Jobs")
        return _JobEvents(response)

    def ping(self) -> None:
        # a list in the namespace pman works in: reachable, and allowed to
        self._call(self.batch.list_namespaced_job, "answering a ping", self.namespace, limit=1)


def _status_of(e: ApiException) -> dict[str, Any]:
    """The ``Status`` object of an API error, {} if the body is not one."""
    try:
        body = json.loads(e.body or b"{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


#: words of a ``Status`` cause's field path -> the request field behind it
_CAUSE_FIELDS = (
    ("metadata.name", "jid"),
    (".env", "env"),
    (".image", "image"),
    (".command", "entrypoint"),
    (".args", "args"),
    ("[cpu]", "cpu_limit"),
    ("[memory]", "memory_limit"),
    ("gpu", "gpu_limit"),
    ("parallelism", "number_of_workers"),
    ("completions", "number_of_workers"),
)


def _fields_of(status: dict[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for cause in (status.get("details") or {}).get("causes") or []:
        path = str(cause.get("field", ""))
        for word, field_name in _CAUSE_FIELDS:
            if word in path:
                fields.setdefault(field_name, str(cause.get("message", "")))
    return fields
