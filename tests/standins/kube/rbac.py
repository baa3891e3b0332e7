"""The stand-in's authorization: RBAC-style rules for its one user, enforced on
every request (403 Forbidden as the real API server words it) and answered by
``SelfSubjectAccessReview`` (authorization.k8s.io/v1).

A rule is a ``PolicyRule`` as in a Role: ``{"apiGroups": [...], "resources":
[...], "verbs": [...]}`` with ``*`` as a wildcard, a subresource named
``pods/log``. The default grants every verb on everything the stand-in serves
(pman's needs among them); a test takes one away with
:meth:`Rules.deny` (``standin.rules.deny("patch", "jobs", "batch")``).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

#: the user the stand-in's kubeconfig authenticates as
USER = "standin-user"

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
DEFAULT_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": ALL_VERBS},
    {
        "apiGroups": [""],
        "resources": [
            "pods",
            "pods/log",
            "pods/status",
            "pods/eviction",
            "persistentvolumeclaims",
            "namespaces",
        ],
        "verbs": ALL_VERBS,
    },
]


@dataclass(frozen=True)
class Attributes:
    """What a request does, as the authorizer sees it (k8s ``authorizer.Attributes``)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _has(values: list[str], value: str) -> bool:
    return "*" in values or value in values


class Rules:
    """The rules granted to the stand-in's user (thread-safe; tests change them live)."""

    def __init__(self, rules: list[dict[str, list[str]]] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules = copy.deepcopy(DEFAULT_RULES if rules is None else rules)

    def get(self) -> list[dict[str, list[str]]]:
        with self._lock:
            return copy.deepcopy(self._rules)

    def set(self, rules: list[dict[str, list[str]]]) -> None:
        with self._lock:
            self._rules = copy.deepcopy(rules)

    def reset(self) -> None:
        self.set(DEFAULT_RULES)

    def deny(self, verb: str, resource: str, group: str = "") -> None:
        """Take ``verb`` on ``resource`` (``pods/log`` for a subresource) away:
        the rules that grant it grant everything else they did, and not that."""
        with self._lock:
            kept: list[dict[str, list[str]]] = []
            for rule in self._rules:
                hit = (
                    _has(rule["apiGroups"], group)
                    and resource in rule["resources"]
                    and _has(rule["verbs"], verb)
                )
                if not hit:
                    kept.append(rule)
                    continue
                others = [r for r in rule["resources"] if r != resource]
                if others:
                    kept.append({**rule, "resources": others})
                verbs = ALL_VERBS if "*" in rule["verbs"] else rule["verbs"]
                left = [v for v in verbs if v != verb]
                if left:
                    kept.append({**rule, "resources": [resource], "verbs": left})
            self._rules = kept

    def allows(self, attrs: Attributes) -> bool:
        with self._lock:
            return any(
                _has(rule["apiGroups"], attrs.group)
                and _has(rule["resources"], attrs.full_resource)
                and _has(rule["verbs"], attrs.verb)
                for rule in self._rules
            )


def forbidden(attrs: Attributes) -> ApiError:
    """403 as the API server words it (``responsewriters.forbiddenMessage``)."""
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{USER}" cannot {attrs.verb} resource '
        f'"{attrs.full_resource}" in API group "{attrs.group}" {scope}'
    )
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.group:
        details["group"] = attrs.group
    return ApiError(403, "Forbidden", message, details)


#: route name -> (group, resource, subresource); which verb depends on the method
ROUTE_RESOURCES: dict[str, tuple[str, str, str]] = {
    "jobs_all": ("batch", "jobs", ""),
    "jobs": ("batch", "jobs", ""),
    "job": ("batch", "jobs", ""),
    "job_status": ("batch", "jobs", "status"),
    "pods_all": ("", "pods", ""),
    "pods": ("", "pods", ""),
    "pod": ("", "pods", ""),
    "pod_status": ("", "pods", "status"),
    "pod_log": ("", "pods", "log"),
    "pod_eviction": ("", "pods", "eviction"),
    "pvcs": ("", "persistentvolumeclaims", ""),
    "pvc": ("", "persistentvolumeclaims", ""),
    "namespace": ("", "namespaces", ""),
}
_COLLECTIONS = ("jobs_all", "jobs", "pods_all", "pods", "pvcs")
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def attributes_of(
    route: str, method: str, params: dict[str, str], watch: bool
) -> Attributes | None:
    """The request's attributes; None for what needs no permission (discovery,
    /version, access reviews: every user may)."""
    if route not in ROUTE_RESOURCES:
        return None
    group, resource, sub = ROUTE_RESOURCES[route]
    if method == "GET":
        verb = ("watch" if watch else "list") if route in _COLLECTIONS else "get"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    if route == "namespace":  # cluster-scoped: the namespace is its name
        return Attributes(verb, group, resource, sub, "", params.get("ns", ""))
    # a subresource's name is the object's
    return Attributes(verb, group, resource, sub, params.get("ns", ""), params.get("name", ""))


def review(spec: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """The ``status`` of a SelfSubjectAccessReview of ``spec`` (validated)."""
    res = spec.get("resourceAttributes")
    if res is None:
        # non-resource URLs (/version, /api, /apis...): system:discovery grants GET
        allowed = (spec.get("nonResourceAttributes") or {}).get("verb") == "get"
        return _status(allowed)
    attrs = Attributes(
        verb=res.get("verb", ""),
        group=res.get("group", ""),
        resource=res.get("resource", ""),
        subresource=res.get("subresource", ""),
        namespace=res.get("namespace", ""),
        name=res.get("name", ""),
    )
    return _status(rules.allows(attrs))


def _status(allowed: bool) -> dict[str, Any]:
    # RBAC gives a reason when it allows; when nothing allows, no reason and no
    # "denied" (RBAC never denies: it only does not allow)
    if allowed:
        return {
            "allowed": True,
            "reason": f'RBAC: allowed by ClusterRoleBinding "standin" of ClusterRole "standin" '
            f'to User "{USER}"',
        }
    return {"allowed": False}
