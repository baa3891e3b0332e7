"""A Job's state from the Job and its pods, as the API's JSON gives them.

Pure functions over the camelCase objects the Kubernetes docs describe: the
Job controller's conditions decide the end; the pods say why a job failed
(exit code, OOMKilled, Evicted) and whether one that has not started is stuck
(image pull, config error, unschedulable) past the pending timeout.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pman.backends.base import Outcome
from pman.backends.kit.times import parse_time
from pman.backends.kubernetes.manifest import CONTAINER_NAME, INDEX_ANNOTATION, unescape
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_MANAGED
from pman.models import JobInfo, JobState, Reason

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
STUCK_REASONS: dict[str, Reason] = {
    "ErrImagePull": Reason.IMAGE_PULL_FAILED,
    "ImagePullBackOff": Reason.IMAGE_PULL_FAILED,
    "InvalidImageName": Reason.IMAGE_PULL_FAILED,
    "ErrImageNeverPull": Reason.IMAGE_PULL_FAILED,
    "CreateContainerConfigError": Reason.CONFIG_ERROR,
    "CreateContainerError": Reason.START_FAILED,
    "RunContainerError": Reason.START_FAILED,
}

#: Job conditions after which a watch reports the Job as possibly ended
ENDING_CONDITIONS = frozenset({"Complete", "Failed", "FailureTarget"})

_MIB = 1024 * 1024


def index_of(pod: dict[str, Any]) -> int:
    """The pod's worker index in its Indexed Job (0 if unreadable)."""
    annotations = pod.get("metadata", {}).get("annotations") or {}
    try:
        return int(annotations.get(INDEX_ANNOTATION, 0))
    except ValueError:
        return 0


def workers_of(job: dict[str, Any]) -> int:
    """The number of workers (completions) of a Job."""
    return int((job.get("spec") or {}).get("completions") or 1)


def newest_pods(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The newest pod of each worker index (a replaced pod's logs are not the job's)."""
    newest: dict[int, dict[str, Any]] = {}
    for pod in pods:
        i = index_of(pod)
        created = pod.get("metadata", {}).get("creationTimestamp") or ""
        if i not in newest or created > newest[i]["metadata"].get("creationTimestamp", ""):
            newest[i] = pod
    return newest


def pods_by_job(pods: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Pods by the uid of the Job that controls them."""
    by_job: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        for owner in pod.get("metadata", {}).get("ownerReferences") or []:
            if owner.get("kind") == "Job" and owner.get("controller"):
                by_job.setdefault(owner.get("uid", ""), []).append(pod)
    return by_job


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER_NAME:
            return cs
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def true_conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The object's conditions whose status is "True", by type."""
    return {
        c.get("type", ""): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }


def has_ended(job: dict[str, Any]) -> bool:
    """Whether the Job controller has ended the Job (Complete or Failed)."""
    conditions = true_conditions(job)
    return "Complete" in conditions or "Failed" in conditions


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
            Reason.EVICTED,
            f"{who}evicted by Kubernetes: {st.get('message') or 'no message'}",
        )
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        return Outcome(
            JobState.FAILED,
            Reason.OOM_KILLED,
            f"{who}killed: out of memory (memory_limit {memory_mib} MiB), exit code {code}",
            code,
        )
    if st.get("reason") == "DeadlineExceeded":
        return Outcome(
            JobState.FAILED, Reason.TIME_LIMIT, f"{who}killed: {st.get('message')}", code
        )
    if code is None:
        text = st.get("message") or st.get("reason") or "no container status"
        return Outcome(JobState.FAILED, Reason.POD_FAILED, f"{who}pod failed: {text}")
    detail = terminated.get("message") or ""
    return Outcome(
        JobState.FAILED,
        Reason.EXIT_CODE,
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
                Reason.NOT_SCHEDULED,
                f"{who}Kubernetes could not place the job within {pending_timeout:g} s: {text}",
            ), text
        return None, text
    return None, ""


def _failed_outcome(
    job: dict[str, Any],
    failed: dict[str, Any],
    pods: list[dict[str, Any]],
    memory_mib: int,
    who: Callable[[dict[str, Any]], str],
) -> Outcome:
    """Why a Job with a Failed condition failed."""
    spec = job.get("spec") or {}
    if failed.get("reason") == "DeadlineExceeded":
        minutes = int(spec.get("activeDeadlineSeconds") or 0) / 60
        return Outcome(
            JobState.FAILED,
            Reason.TIME_LIMIT,
            f"killed: ran longer than its time limit of {minutes:g} minutes "
            f"(TIMELIMIT_MINUTES): {failed.get('message', '')}",
        )
    # the worker that failed first is the cause; the others were stopped for it
    failed_pods = sorted(
        (p for p in pods if (p.get("status") or {}).get("phase") == "Failed"),
        key=lambda p: (_finished_at(p) or "~", index_of(p)),
    )
    for pod in failed_pods:
        outcome = _failed_pod_outcome(pod, memory_mib, who(pod))
        if outcome.reason is not Reason.POD_FAILED:
            return outcome
    if failed_pods:
        return _failed_pod_outcome(failed_pods[0], memory_mib, who(failed_pods[0]))
    return Outcome(
        JobState.FAILED,
        Reason.JOB_FAILED,
        f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}",
    )


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
    workers = workers_of(job)
    container = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    memory = ((container[0].get("resources") or {}).get("limits") or {}).get("memory", "")
    memory_mib = mebibytes(str(memory))
    pods = sorted(pods, key=index_of)

    def who(pod: dict[str, Any]) -> str:
        return f"worker {index_of(pod)}: " if workers > 1 else ""

    # only the final conditions: FailureTarget and SuccessCriteriaMet come
    # while pods may still be terminating, and the output is not final yet
    conditions = true_conditions(job)
    # pman suspends a Job to cancel it: the controller deletes its pods, which
    # may count as failed ones (a Failed condition may follow): cancelled
    live = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if spec.get("suspend") and "Suspended" in conditions and not live:
        return Outcome(JobState.CANCELLED, Reason.SUSPENDED, "cancelled: the Job is suspended")
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
        return _failed_outcome(job, failed, pods, memory_mib, who)

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
        return Outcome(JobState.UNKNOWN, Reason.UNKNOWN_STATUS, "a pod's state is Unknown")
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


def mebibytes(quantity: str) -> int:
    """A memory quantity as pman writes it (``128Mi``) in MiB; 0 if unreadable."""
    m = _QUANTITY.fullmatch(quantity)
    if not m or m.group(2) not in _QUANTITY_BYTES:
        return 0
    return int(m.group(1)) * _QUANTITY_BYTES[m.group(2)] // _MIB


def _pman_annotations(meta: dict[str, Any]) -> dict[str, str]:
    """pman's labels kept as annotations (those whose values are no label values)."""
    return {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k == LABEL_MANAGED or k.startswith(LABEL_MANAGED + ".")
    }


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
        ended = true_conditions(job).get("Complete") or true_conditions(job).get("Failed") or {}
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
