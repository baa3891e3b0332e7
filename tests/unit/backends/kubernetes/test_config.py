"""What the Kubernetes backend reads from the settings, and the settings it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pman.backends.kubernetes import KubernetesBackend
from pman.backends.kubernetes.config import KubernetesConfig
from pman.errors import ConfigError
from pman.settings import load_settings
from tests.unit.backends.kubernetes.helpers import backend, settings


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


def test_the_configuration_is_read_from_the_settings_once(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        JOB_NAMESPACE="jobs",
        PMAN_ENGINE_TIMEOUT="7",
        PMAN_KUBERNETES_PENDING_TIMEOUT="45",
        KUBERNETES_GPU_RESOURCE="amd.com/gpu",
        NODE_SELECTOR="disk=ssd",
        TOLERATIONS='[{"key": "gpu", "operator": "Exists"}]',
        IMAGE_PULL_SECRETS="a,b",
        SHM_SIZE="64",
        IGNORE_LIMITS="true",
        SECURITYCONTEXT_RUN_AS_USER="1001",
        TIMELIMIT_MINUTES="90",
        JOB_TTL_SECONDS="600",
    )
    c = KubernetesConfig.from_settings(s)
    assert (c.namespace, c.timeout, c.pending_timeout) == ("jobs", 7.0, 45.0)
    assert c.kubeconfig == str(tmp_path / "kubeconfig") and not c.in_cluster
    assert (c.storage_type, c.storebase) == ("host", tmp_path / "storebase")
    assert c.gpu_resource == "amd.com/gpu"
    assert c.node_selector == {"disk": "ssd"}
    assert c.tolerations == ({"key": "gpu", "operator": "Exists"},)
    assert c.image_pull_secrets == ("a", "b")
    assert (c.shm_size, c.ignore_limits) == (64, True)
    assert (c.run_as_user, c.run_as_group) == (1001, None)
    assert (c.timelimit_minutes, c.job_ttl_seconds) == (90, 600)


def test_in_cluster_without_a_kubeconfig_needs_the_pods_service_account(tmp_path: Path) -> None:
    s = load_settings(
        {
            "CONTAINER_ENV": "kubernetes",
            "STORAGE_TYPE": "kubernetes_pvc",
            "VOLUME_NAME": "storebase",
            "PMAN_DATA_DIR": str(tmp_path / "data"),
            "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        }
    )
    assert KubernetesConfig.from_settings(s).in_cluster
    # not in a pod here: no ServiceAccount token to load
    with pytest.raises(ConfigError, match="Kubernetes client configuration") as e:
        KubernetesBackend.from_settings(s)
    assert "KUBECONFIG" in e.value.fields
