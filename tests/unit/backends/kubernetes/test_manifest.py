"""The Job pman writes (checked against the real schemas), built without a
cluster from a job's spec and the site's configuration."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from pman.backends.kubernetes.manifest import (
    check_env,
    escape_expansion,
    is_label_key,
    is_label_value,
    unescape,
)
from pman.errors import InvalidJobSpec
from tests.unit.backends.kubernetes.helpers import (
    K8S_VERSION,
    manifest,
    pod_spec,
    site,
    spec,
)


def test_job_is_valid_for_kubernetes_and_carries_limits_and_security(tmp_path: Path) -> None:
    s = site(
        tmp_path,
        NODE_SELECTOR="disk=ssd",
        TOLERATIONS='[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]',
        IMAGE_PULL_SECRETS="regcred",
        JOB_LABELS="team=neuro",
        SHM_SIZE="256",
        TIMELIMIT_MINUTES="90",
        CONTAINER_USER="1001:1002",
    )
    job = manifest(s)
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
    job = manifest(site(tmp_path))
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
    pod = pod_spec(manifest(site(tmp_path)))
    vols = {v["name"]: v for v in pod["volumes"]}
    base = tmp_path / "storebase"
    assert vols["incoming"]["hostPath"] == {"path": str(base / "in"), "type": "Directory"}
    assert vols["outgoing"]["hostPath"] == {"path": str(base / "out"), "type": "DirectoryOrCreate"}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/share/incoming"]["readOnly"] is True
    assert not mounts["/share/outgoing"].get("readOnly")


def test_pvc_storage_uses_sub_paths(tmp_path: Path) -> None:
    s = site(tmp_path, STORAGE_TYPE="kubernetes_pvc", VOLUME_NAME="storebase")
    job = manifest(s, input_dir="key-1/in", output_dir="key-1/out")
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
    s = site(tmp_path, STORAGE_TYPE="nfs", NFS_SERVER="10.0.0.5", STOREBASE="/exports/store")
    job = manifest(s)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    vols = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert vols["incoming"]["nfs"] == {
        "server": "10.0.0.5",
        "path": "/exports/store/in",
        "readOnly": True,
    }
    assert vols["outgoing"]["nfs"] == {"server": "10.0.0.5", "path": "/exports/store/out"}


def test_workers_and_gpus(tmp_path: Path) -> None:
    s = site(tmp_path, KUBERNETES_GPU_RESOURCE="amd.com/gpu", IGNORE_LIMITS="true")
    job = manifest(s, number_of_workers=3, gpu_limit=2)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    res = pod_spec(job)["containers"][0]["resources"]
    assert res == {"limits": {"amd.com/gpu": "2"}, "requests": {"amd.com/gpu": "2"}}


def test_env_names_kubernetes_refuses_are_400(tmp_path: Path) -> None:
    with pytest.raises(InvalidJobSpec, match="environment variable") as e:
        manifest(site(tmp_path), env=["1BAD=x"])
    assert "env" in e.value.fields


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("team", True),
        ("org.chrisproject.pman", True),
        ("example.com/team", True),
        ("a/b/c", False),
        ("Example.com/team", False),
        ("-team", False),
        ("x" * 63, True),
        ("x" * 64, False),
        ("", False),
    ],
)
def test_label_keys(key: str, ok: bool) -> None:
    assert is_label_key(key) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("true", True),
        ("a-b_c.d", True),
        ("chris@example.org", False),
        ("ghcr.io/fnndsc/pl:1", False),
        ("-a", False),
        ("x" * 64, False),
    ],
)
def test_label_values(value: str, ok: bool) -> None:
    assert is_label_value(value) is ok


@pytest.mark.parametrize("text", ["", "plain", "$(HOME)", "$$", "costs $5", "$$(X)$"])
def test_escaped_text_reads_back(text: str) -> None:
    assert unescape(escape_expansion(text)) == text


def test_check_env_refuses_only_names_kubernetes_refuses(tmp_path: Path) -> None:
    s = site(tmp_path)
    check_env(spec(s, env=["A=1", "a.b-c=2", "_X=", "-Y=3"]))
    for bad in ("1BAD=x", "A B=x", "=x", "A$=x"):
        with pytest.raises(InvalidJobSpec, match="environment variable") as e:
            check_env(spec(s, env=["OK=1", bad]))
        assert e.value.fields == {"env": "invalid variable name"}
