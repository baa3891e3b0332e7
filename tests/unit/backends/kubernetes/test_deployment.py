"""The deployment manifests in kubernetes/: valid for Kubernetes, least
privilege for what the backend calls, and a configuration pman accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pman.settings import load_settings

K8S_VERSION = "1.30.0"
MANIFESTS = Path(__file__).resolve().parents[4] / "kubernetes"


def objects() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in objects() if o["kind"] == kind]


@pytest.mark.parametrize("obj", objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_manifest_is_valid(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_kind_is_there() -> None:
    kinds = {o["kind"] for o in objects()}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
    }


def test_role_grants_exactly_what_the_backend_uses() -> None:
    (role,) = by_kind("Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # KubernetesBackend: create/read/list/watch/delete Jobs, patch them (cancel:
    # spec.suspend), list pods, read pod logs
    assert granted == {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "list"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "patch"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    }
    (binding,) = by_kind("RoleBinding")
    (account,) = by_kind("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "pman"}
    ]


def test_deployment_configuration_is_accepted_by_pman() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    environ = {e["name"]: e.get("value", "pman") for e in container["env"]}
    # inside a pod Kubernetes sets this: pman then uses its ServiceAccount
    environ["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
    settings = load_settings(environ)
    resource = settings.resource
    assert resource.container_env == "kubernetes"
    assert resource.engine.in_cluster and resource.engine.kubeconfig is None
    assert resource.storage.storage_type == "kubernetes_pvc"
    claims = {o["metadata"]["name"] for o in by_kind("PersistentVolumeClaim")}
    assert resource.storage.volume_name in claims
    assert pod["serviceAccountName"] == by_kind("ServiceAccount")[0]["metadata"]["name"]
    (service,) = by_kind("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
