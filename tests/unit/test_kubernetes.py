"""The Kubernetes backend without a cluster: the Job it writes (checked against
the real schemas), the state it reads from Jobs and pods, settings and errors.
The stand-in tests (tests/integration/test_kubernetes.py) run it for real."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client.exceptions import ApiException

from pman.backends.kubernetes import (
    KubernetesBackend,
    escape_expansion,
    job_info,
    job_state,
)
from pman.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidJobSpec,
)
from pman.jobs import build_spec
from pman.models import JobRequest, JobState
from pman.settings import load_settings
from pman.storage import Storage

#: the Kubernetes version whose schemas the Job must satisfy
K8S_VERSION = "1.30.0"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def backend(tmp_path: Path, **env: str) -> KubernetesBackend:
    storebase = tmp_path / "storebase"
    (storebase / "in").mkdir(parents=True, exist_ok=True)
    settings = load_settings(
        {
            "CONTAINER_ENV": "kubernetes",
            "STOREBASE": str(storebase),
            "KUBECONFIG": str(kubeconfig(tmp_path)),
            "PMAN_DATA_DIR": str(tmp_path / "data"),
            **env,
        }
    )
    return KubernetesBackend.from_settings(settings)


def request(**overrides: Any) -> JobRequest:
    fields: dict[str, Any] = dict(
        jid="job-1",
        args=["--greeting", "$(HOME) costs $5"],
        args_path_flags=[],
        auid="chris@example.org",
        number_of_workers=1,
        cpu_limit=500,
        memory_limit=128,
        gpu_limit=0,
        image="ghcr.io/fnndsc/pl-simpledsapp:2.1.0",
        entrypoint=["simpledsapp"],
        type="ds",
        env=["GREETING=$(NAME)", "PLAIN=1"],
        input_dir="in",
        output_dir="out",
    )
    fields.update(overrides)
    return JobRequest(**fields)


def manifest(b: KubernetesBackend, **overrides: Any) -> dict[str, Any]:
    spec = build_spec(request(**overrides), b.settings, Storage(b.settings))
    return b.manifest(spec)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


# ------------------------------------------------------------------ the Job


def test_job_is_valid_for_kubernetes_and_carries_limits_and_security(tmp_path: Path) -> None:
    b = backend(
        tmp_path,
        NODE_SELECTOR="disk=ssd",
        TOLERATIONS='[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        IMAGE_PULL_SECRETS="regcred",
        JOB_LABELS="team=neuro",
        SHM_SIZE="256",
        TIMELIMIT_MINUTES="90",
        CONTAINER_USER="1001:1002",
    )
    job = manifest(b)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 90 * 60
    assert spec["ttlSecondsAfterFinished"] == 86400
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 1
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1001,
        "runAsNonRoot": True,
        "runAsGroup": 1002,
    }
    (c,) = pod["containers"]
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "128Mi"}
    assert c["resources"]["requests"] == c["resources"]["limits"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    # labels only where Kubernetes takes them; all of pman's as annotations too
    labels = job["metadata"]["labels"]
    assert labels["team"] == "neuro"
    assert labels["org.chrisproject.pman"] == "true"
    assert "org.chrisproject.pman.image" not in labels  # "/" and ":" are no label value
    assert "org.chrisproject.pman.auid" not in labels  # "@" neither
    annotations = job["metadata"]["annotations"]
    assert annotations["org.chrisproject.pman.image"] == "ghcr.io/fnndsc/pl-simpledsapp:2.1.0"
    assert annotations["org.chrisproject.pman.auid"] == "chris@example.org"
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_dollar_signs_reach_the_job_unexpanded(tmp_path: Path) -> None:
    job = manifest(backend(tmp_path))
    c = pod_spec(job)["containers"][0]
    assert c["command"] == ["simpledsapp"]
    assert "$$(HOME) costs $$5" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["GREETING"]["value"] == "$$(NAME)"
    assert env["PLAIN"]["value"] == "1"
    assert escape_expansion("$$") == "$$$$"
    # the worker's index comes from the annotation of its Indexed Job
    assert env["PMAN_WORKER_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env["PMAN_NUMBER_OF_WORKERS"]["value"] == "1"


def test_host_storage_mounts_input_read_only(tmp_path: Path) -> None:
    pod = pod_spec(manifest(backend(tmp_path)))
    vols = {v["name"]: v for v in pod["volumes"]}
    base = tmp_path / "storebase"
    assert vols["incoming"]["hostPath"] == {"path": str(base / "in"), "type": "Directory"}
    assert vols["outgoing"]["hostPath"] == {"path": str(base / "out"), "type": "DirectoryOrCreate"}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/share/incoming"]["readOnly"] is True
    assert not mounts["/share/outgoing"].get("readOnly")


def test_pvc_storage_uses_sub_paths(tmp_path: Path) -> None:
    b = backend(tmp_path, STORAGE_TYPE="kubernetes_pvc", VOLUME_NAME="storebase")
    job = manifest(b, input_dir="key-1/in", output_dir="key-1/out")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = pod_spec(job)
    assert pod["volumes"] == [
        {"name": "storebase", "persistentVolumeClaim": {"claimName": "storebase"}}
    ]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/share/incoming"] == {
        "name": "storebase",
        "mountPath": "/share/incoming",
        "readOnly": True,
        "subPath": "key-1/in",
    }
    assert mounts["/share/outgoing"]["subPath"] == "key-1/out"


def test_nfs_storage(tmp_path: Path) -> None:
    b = backend(tmp_path, STORAGE_TYPE="nfs", NFS_SERVER="10.0.0.5", STOREBASE="/exports/store")
    job = manifest(b)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    vols = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert vols["incoming"]["nfs"] == {
        "server": "10.0.0.5",
        "path": "/exports/store/in",
        "readOnly": True,
    }
    assert vols["outgoing"]["nfs"] == {"server": "10.0.0.5", "path": "/exports/store/out"}


def test_workers_and_gpus(tmp_path: Path) -> None:
    b = backend(tmp_path, KUBERNETES_GPU_RESOURCE="amd.com/gpu", IGNORE_LIMITS="true")
    job = manifest(b, number_of_workers=3, gpu_limit=2)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    res = pod_spec(job)["containers"][0]["resources"]
    assert res == {"limits": {"amd.com/gpu": "2"}, "requests": {"amd.com/gpu": "2"}}


def test_jid_must_be_a_dns_label(tmp_path: Path) -> None:
    b = backend(tmp_path)
    b.check_name("chris-jid-12")
    for bad in ("Chris", "a_b", "a.b", "-a", "a-", "x" * 64):
        with pytest.raises(InvalidJobSpec, match="DNS-1123 label") as e:
            b.check_name(bad)
        assert "jid" in e.value.fields


def test_env_names_kubernetes_refuses_are_400(tmp_path: Path) -> None:
    with pytest.raises(InvalidJobSpec, match="environment variable") as e:
        manifest(backend(tmp_path), env=["1BAD=x"])
    assert "env" in e.value.fields


# ------------------------------------------------------------------ settings


def test_tolerations_setting_is_checked(tmp_path: Path) -> None:
    for bad, words in (
        ("{", "not JSON"),
        ('{"key": "a"}', "JSON list"),
        ('[{"key": "a", "operator": "Near"}]', "operator"),
        ('[{"key": "a", "effect": "Never"}]', "effect"),
        ('[{"kee": "a"}]', "unknown field"),
        ('[{"operator": "Equal", "value": "x"}]', "without a key"),
    ):
        with pytest.raises(ConfigError, match=words) as e:
            backend(tmp_path, TOLERATIONS=bad)
        assert "TOLERATIONS" in e.value.fields


def test_job_labels_must_be_kubernetes_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="JOB_LABELS") as e:
        backend(tmp_path, JOB_LABELS="owner=a b")
    assert "JOB_LABELS" in e.value.fields


def test_missing_kubeconfig_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kubeconfig|Kubernetes client"):
        backend(tmp_path, KUBECONFIG=str(tmp_path / "nope"))


def test_pvc_storage_needs_kubernetes() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            {"CONTAINER_ENV": "docker", "STORAGE_TYPE": "kubernetes_pvc", "VOLUME_NAME": "v"}
        )
    assert "STORAGE_TYPE" in e.value.fields


# ------------------------------------------------------------------ errors


def api_error(status: int, body: dict[str, Any] | None = None) -> ApiException:
    e = ApiException(status=status, reason="x")
    e.body = json.dumps(body or {}).encode()
    return e


def test_invalid_status_names_the_fields(tmp_path: Path) -> None:
    b = backend(tmp_path)
    status = {
        "kind": "Status",
        "code": 422,
        "message": 'Job.batch "j" is invalid: spec.template.spec.containers[0].env[0].name',
        "details": {
            "causes": [
                {
                    "field": "spec.template.spec.containers[0].env[0].name",
                    "message": "Invalid value",
                },
                {
                    "field": "spec.template.spec.containers[0].resources.limits[memory]",
                    "message": "must be less than or equal to memory limit",
                },
            ]
        },
    }
    with pytest.raises(InvalidJobSpec, match="is invalid") as e:
        b._raise(api_error(422, status), "creating Job 'j'")
    assert set(e.value.fields) == {"env", "memory_limit"}


def test_engine_errors_are_5xx_with_reasons(tmp_path: Path) -> None:
    b = backend(tmp_path)
    forbidden = {"kind": "Status", "reason": "Forbidden", "message": "jobs.batch is forbidden"}
    with pytest.raises(BackendError, match="Role") as e:
        b._raise(api_error(403, forbidden), "listing")
    assert not isinstance(e.value, BackendUnavailable)
    with pytest.raises(BackendUnavailable):
        b._raise(api_error(503), "listing")


def test_unreachable_api_is_unavailable(tmp_path: Path) -> None:
    b = backend(tmp_path, PMAN_ENGINE_TIMEOUT="2")
    b.client.configuration.retries = 0
    with pytest.raises(BackendUnavailable, match=r"unreachable|did not answer"):
        b.ping()


# ------------------------------------------------------------------ state


def job(status: dict[str, Any] | None = None, workers: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-1",
            "uid": "u1",
            "creationTimestamp": iso(NOW - timedelta(minutes=5)),
            "labels": {"org.chrisproject.pman": "true", "org.chrisproject.pman.fingerprint": "f"},
            "annotations": {"org.chrisproject.pman.image": "img:1"},
        },
        "spec": {
            "completions": workers,
            "parallelism": workers,
            "activeDeadlineSeconds": 1800,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "job",
                            "image": "img:1",
                            "command": ["run"],
                            "args": ["$$5"],
                            "resources": {"limits": {"memory": "64Mi"}},
                        }
                    ]
                }
            },
            **spec,
        },
        "status": status if status is not None else {},
    }


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": iso(NOW),
    }


def pod(
    phase: str,
    index: int = 0,
    state: dict[str, Any] | None = None,
    age: float = 10,
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"job-1-{index}-abcde",
            "creationTimestamp": iso(NOW - timedelta(seconds=age)),
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [{"kind": "Job", "uid": "u1", "controller": True}],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "job", "state": state or {}}],
            **status,
        },
    }


def terminated(code: int, reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": iso(NOW - timedelta(seconds=4)),
            "finishedAt": iso(NOW - timedelta(seconds=1)),
        }
    }


def state_of(j: dict[str, Any], pods: list[dict[str, Any]], timeout: float = 60) -> Any:
    return job_state(j, pods, timeout, NOW)


def test_job_without_any_status_yet_is_queued_not_undefined() -> None:
    # upstream reported "undefined" here (FNNDSC/pman#225)
    out = state_of(job(), [])
    assert out.state is JobState.QUEUED
    assert "Job controller" in out.message


def test_complete_job_succeeds_even_without_counts() -> None:
    out = state_of(job({"conditions": [condition("Complete")]}), [])
    assert (out.state, out.exit_code) == (JobState.SUCCEEDED, 0)


def test_running_and_pending() -> None:
    running = pod("Running", state={"running": {"startedAt": iso(NOW)}})
    assert state_of(job({"active": 1}), [running]).state is JobState.RUNNING
    creating = pod("Pending", state={"waiting": {"reason": "ContainerCreating"}})
    out = state_of(job({"active": 1}), [creating])
    assert out.state is JobState.QUEUED and "ContainerCreating" in out.message


def test_failed_job_reports_the_exit_code() -> None:
    failed = job({"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    out = state_of(failed, [pod("Failed", state=terminated(3))])
    assert (out.state, out.exit_code, out.reason) == (JobState.FAILED, 3, "exit_code")
    assert out.message == "exited with code 3"


def test_oom_killed() -> None:
    failed = job({"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    out = state_of(failed, [pod("Failed", state=terminated(137, "OOMKilled"))])
    assert out.state is JobState.FAILED and out.reason == "oom_killed"
    assert "out of memory (memory_limit 64 MiB)" in out.message


def test_deadline_exceeded() -> None:
    failed = job({"conditions": [condition("Failed", "DeadlineExceeded", "Job was active longer")]})
    out = state_of(failed, [])
    assert out.state is JobState.FAILED and out.reason == "time_limit"
    assert "time limit of 30 minutes" in out.message


def test_evicted() -> None:
    failed = job({"failed": 1, "conditions": [condition("Failed", "BackoffLimitExceeded")]})
    evicted = pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    out = state_of(failed, [evicted])
    assert out.state is JobState.SYSTEM_ERROR and out.reason == "evicted"
    assert "low on resource: memory" in out.message


def test_the_worker_that_failed_is_named_before_those_stopped_for_it() -> None:
    failed = job(
        {"failed": 2, "conditions": [condition("Failed", "BackoffLimitExceeded")]}, workers=2
    )
    own = pod("Failed", 1, state=terminated(2))
    # worker 0 was killed when worker 1 failed: it ended later, with 137
    stopped = pod("Failed", 0, state=terminated(137))
    stopped["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = iso(NOW)
    out = state_of(failed, [stopped, own])
    assert out.message == "worker 1: exited with code 2"
    # a pod that never ran comes after those that did
    never = pod("Failed", 0, reason="", message="")
    never["status"]["containerStatuses"] = []
    assert state_of(failed, [never, own]).message == "worker 1: exited with code 2"


def test_failure_target_is_not_the_end_yet() -> None:
    # set while pods may still be terminating: the output is not final
    j = job({"active": 1, "conditions": [condition("FailureTarget", "BackoffLimitExceeded")]})
    running = pod("Running", state={"running": {"startedAt": iso(NOW)}})
    assert state_of(j, [running]).state is JobState.RUNNING


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"]
)
def test_stuck_pods_are_errors_after_the_grace_period_only(reason: str) -> None:
    waiting = {"waiting": {"reason": reason, "message": "no such image"}}
    young = pod("Pending", state=waiting, age=5)
    assert state_of(job({"active": 1}), [young], timeout=30).state is JobState.QUEUED
    old = pod("Pending", state=waiting, age=31)
    out = state_of(job({"active": 1}), [old], timeout=30)
    assert out.state is JobState.SYSTEM_ERROR
    assert reason in out.message and "no such image" in out.message


def test_unschedulable_pod_is_an_error_after_the_grace_period() -> None:
    unschedulable = pod("Pending", age=100)
    unschedulable["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        }
    ]
    unschedulable["status"]["containerStatuses"] = []
    out = state_of(job({"active": 1}), [unschedulable], timeout=60)
    assert out.state is JobState.SYSTEM_ERROR and out.reason == "not_scheduled"
    assert "Insufficient nvidia.com/gpu" in out.message


def test_job_info_reads_back_what_pman_wrote() -> None:
    done = job({"conditions": [condition("Complete")], "completionTime": iso(NOW), "succeeded": 1})
    info = job_info(done, [pod("Succeeded", state=terminated(0, "Completed"))], 60, NOW)
    assert info.state is JobState.SUCCEEDED
    assert info.image == "img:1"
    assert info.command == ["run", "$5"]
    assert info.fingerprint == "f"
    assert info.finished_at == NOW
    assert info.started_at == NOW - timedelta(seconds=4)
    assert info.labels["org.chrisproject.pman.image"] == "img:1"
