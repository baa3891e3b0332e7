"""``pman doctor`` for a Kubernetes resource: the API answers (its version),
JOB_NAMESPACE exists, and pman's user may make every call the backend makes
(one SelfSubjectAccessReview per permission, so a missing one is named with
the Role rule that grants it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from pman.backends.kit.doctor import Check, DoctorContext, Finding, ok, problem, skipped
from pman.backends.kubernetes.client import api_client
from pman.backends.kubernetes.config import KubernetesConfig
from pman.errors import ConfigError


@dataclass(frozen=True)
class Permission:
    """An RBAC verb on a resource (``pods/log``: a subresource) of an API group."""

    verb: str
    group: str
    resource: str

    @property
    def qualified(self) -> str:
        """As kubectl names it: ``jobs.batch``, ``pods/log``."""
        plural, _, sub = self.resource.partition("/")
        where = f"{plural}.{self.group}" if self.group else plural
        return f"{where}{'/' + sub if sub else ''}"

    @property
    def words(self) -> str:
        return f"{self.verb} {self.qualified}"

    def rule(self) -> str:
        """The Role rule that grants it."""
        return (
            f'{{apiGroups: ["{self.group}"], resources: ["{self.resource}"], '
            f'verbs: ["{self.verb}"]}}'
        )

    def attributes(self, namespace: str) -> dict[str, str]:
        plural, _, sub = self.resource.partition("/")
        found = {"namespace": namespace, "verb": self.verb, "group": self.group}
        found["resource"] = plural
        if sub:
            found["subresource"] = sub
        return found


#: each call of pman.backends.kubernetes.client (BatchV1Api / CoreV1Api method),
#: and the permission it needs (a unit test checks that none is missing)
CALLS: dict[str, Permission] = {
    "create_namespaced_job": Permission("create", "batch", "jobs"),
    "read_namespaced_job": Permission("get", "batch", "jobs"),
    "list_namespaced_job": Permission("list", "batch", "jobs"),
    "patch_namespaced_job": Permission("patch", "batch", "jobs"),
    "delete_namespaced_job": Permission("delete", "batch", "jobs"),
    "list_namespaced_pod": Permission("list", "", "pods"),
    "read_namespaced_pod_log": Permission("get", "", "pods/log"),
}
#: every permission the backend needs in JOB_NAMESPACE (the tracker watches Jobs too)
PERMISSIONS: tuple[Permission, ...] = (
    *dict.fromkeys(CALLS.values()),
    Permission("watch", "batch", "jobs"),
)


def checks(context: DoctorContext) -> list[Check]:
    config = KubernetesConfig.from_resource(context.resource, context.core)
    timeout = min(config.timeout, context.timeout)
    namespace_var = context.name_of("JOB_NAMESPACE")
    return [
        Check("engine", lambda: [version(config, timeout, context.name_of("KUBECONFIG"))]),
        Check("namespace", lambda: [namespace(config, timeout, namespace_var)], needs="engine"),
        Check("permissions", lambda: permissions(config, timeout), needs="engine"),
    ]


def _client(config: KubernetesConfig) -> kubernetes.client.ApiClient:
    return api_client(config)


def version(config: KubernetesConfig, timeout: float, kubeconfig_var: str) -> Finding:
    try:
        api = _client(config)
    except ConfigError as e:
        return problem(
            "engine",
            e.message,
            f"set {kubeconfig_var} to a readable kubeconfig whose current context reaches the "
            "cluster (or run pman in a pod with a ServiceAccount)",
        )
    try:
        response = kubernetes.client.VersionApi(api).get_code(
            _preload_content=False, _request_timeout=timeout
        )
        answer = json.loads(response.data or b"{}")
    except Exception as e:
        return problem(
            "engine",
            f"the Kubernetes API at {api.configuration.host} does not answer: {_reason(e)}",
            "check the kubeconfig's server address and that the API server runs",
        )
    finally:
        api.close()
    return ok(
        "engine",
        f"Kubernetes {answer.get('gitVersion', '?')} at {api.configuration.host}",
    )


def namespace(config: KubernetesConfig, timeout: float, variable: str) -> Finding:
    api = _client(config)
    try:
        kubernetes.client.CoreV1Api(api).read_namespace(
            config.namespace, _preload_content=False, _request_timeout=timeout
        )
    except ApiException as e:
        if e.status == 404:
            return problem(
                "namespace",
                f"{variable}={config.namespace}: there is no such namespace",
                f"create it (`kubectl create namespace {config.namespace}`), or set {variable} "
                "to an existing one",
            )
        if e.status == 403:
            return skipped(
                "namespace",
                f"pman may not read namespaces (it does not need to): {config.namespace!r} "
                "not checked",
            )
        raise
    finally:
        api.close()
    return ok("namespace", f"namespace {config.namespace!r} exists")


def permissions(config: KubernetesConfig, timeout: float) -> list[Finding]:
    """One SelfSubjectAccessReview per permission pman needs in its namespace."""
    api = _client(config)
    authz = kubernetes.client.AuthorizationV1Api(api)
    missing: list[tuple[Permission, str]] = []
    try:
        for needed in PERMISSIONS:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": needed.attributes(config.namespace)},
            }
            response = authz.create_self_subject_access_review(
                body, _preload_content=False, _request_timeout=timeout
            )
            status = json.loads(response.data or b"{}").get("status") or {}
            if not status.get("allowed"):
                why = status.get("reason") or status.get("evaluationError") or ""
                missing.append((needed, why))
    finally:
        api.close()
    if not missing:
        words = ", ".join(p.words for p in PERMISSIONS)
        return [ok("permissions", f"allowed in namespace {config.namespace!r}: {words}")]
    return [
        problem(
            f"permission {needed.words}",
            f"pman may not {needed.words} in namespace {config.namespace!r}"
            + (f" ({why})" if why else ""),
            f"add the rule {needed.rule()} to the Role bound to pman's user in namespace "
            f"{config.namespace} (e.g. `kubectl create role pman -n {config.namespace} "
            f"--verb={needed.verb} --resource={needed.qualified}` and a RoleBinding to pman's "
            "user)",
        )
        for needed, why in missing
    ]


def _reason(e: Exception) -> str:
    if isinstance(e, ApiException):
        return f"HTTP {e.status} {e.reason}"
    return str(e)
