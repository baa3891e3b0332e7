"""The stand-in's HTTP side: the paths, verbs and wire formats the official client uses."""

from __future__ import annotations

import base64
import json
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import docker.errors

from .errors import (
    ApiError,
    FieldErrors,
    already_exists,
    bad_request,
    method_not_allowed,
    not_found,
    unauthorized,
)
from .rbac import attributes_of, forbidden, review
from .store import Obj, SelectorError, new_uid, parse_field_selector, parse_label_selector
from .validation import (
    PATCH_TYPES,
    default_job,
    validate_access_review,
    validate_eviction,
    validate_job_patch,
    validate_new_job,
)

if TYPE_CHECKING:
    from .standin import KubeStandin

JOB_DELETE_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; '
    'set propagationPolicy=Background to remove them"'
)

NS = r"/namespaces/(?P<ns>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(f"^{pattern}$"))
    for name, pattern in [
        ("version", r"/version/?"),
        ("api", r"/api/?"),
        ("apis", r"/apis/?"),
        ("core", r"/api/v1/?"),
        ("batch", r"/apis/batch/v1/?"),
        ("policy", r"/apis/policy/v1/?"),
        ("jobs_all", r"/apis/batch/v1/jobs"),
        ("jobs", rf"/apis/batch/v1{NS}/jobs"),
        ("job", rf"/apis/batch/v1{NS}/jobs/(?P<name>[^/]+)"),
        ("job_status", rf"/apis/batch/v1{NS}/jobs/(?P<name>[^/]+)/status"),
        ("pods_all", r"/api/v1/pods"),
        ("pods", rf"/api/v1{NS}/pods"),
        ("pod", rf"/api/v1{NS}/pods/(?P<name>[^/]+)"),
        ("pod_status", rf"/api/v1{NS}/pods/(?P<name>[^/]+)/status"),
        ("pod_log", rf"/api/v1{NS}/pods/(?P<name>[^/]+)/log"),
        ("pod_eviction", rf"/api/v1{NS}/pods/(?P<name>[^/]+)/eviction"),
        ("pvcs", rf"/api/v1{NS}/persistentvolumeclaims"),
        ("pvc", rf"/api/v1{NS}/persistentvolumeclaims/(?P<name>[^/]+)"),
        ("namespace", rf"/api/v1{NS}"),
        ("authorization", r"/apis/authorization.k8s.io/v1/?"),
        ("ssar", r"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
    ]
]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CORE_RESOURCES = [
    {
        "name": "namespaces",
        "singularName": "namespace",
        "namespaced": False,
        "kind": "Namespace",
        "verbs": ["get"],
        "shortNames": ["ns"],
    },
    {
        "name": "persistentvolumeclaims",
        "singularName": "persistentvolumeclaim",
        "namespaced": True,
        "kind": "PersistentVolumeClaim",
        "verbs": ["get", "list"],
        "shortNames": ["pvc"],
    },
    {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["delete", "get", "list", "watch"],
        "shortNames": ["po"],
        "categories": ["all"],
    },
    {
        "name": "pods/eviction",
        "singularName": "",
        "namespaced": True,
        "group": "policy",
        "version": "v1",
        "kind": "Eviction",
        "verbs": ["create"],
    },
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    {
        "name": "pods/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get"],
    },
]
AUTHORIZATION_RESOURCES = [
    {
        "name": "selfsubjectaccessreviews",
        "singularName": "selfsubjectaccessreview",
        "namespaced": False,
        "kind": "SelfSubjectAccessReview",
        "verbs": ["create"],
    },
]
BATCH_RESOURCES = [
    {
        "name": "jobs",
        "singularName": "job",
        "namespaced": True,
        "kind": "Job",
        "verbs": ["create", "delete", "get", "list", "patch", "watch"],
        "categories": ["all"],
    },
    {
        "name": "jobs/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Job",
        "verbs": ["get"],
    },
]


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


class Handler(BaseHTTPRequestHandler):
    """One request; ``self.server.standin`` is the KubeStandin serving."""

    protocol_version = "HTTP/1.1"
    server_version = "kube-standin"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def standin(self) -> KubeStandin:
        return self.server.standin  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ plumbing

    def _send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.standin._record(method, parts.path, parts.query)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            token = self.standin.token
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self._read_body_quietly()
                raise unauthorized()
            for name, pattern in ROUTES:
                m = pattern.match(parts.path)
                if m:
                    attrs = attributes_of(
                        name, method, m.groupdict(), _flag(self.query.get("watch"))
                    )
                    if attrs is not None and not self.standin.rules.allows(attrs):
                        self._read_body_quietly()
                        raise forbidden(attrs)
                    handler = getattr(self, f"{method.lower()}_{name}", None)
                    if handler is None:
                        self._read_body_quietly()
                        raise method_not_allowed(method)
                    handler(**m.groupdict())
                    return
            self._read_body_quietly()
            raise ApiError(
                404,
                "NotFound",
                "the server could not find the requested resource",
                {
                    "causes": [
                        {"reason": "UnexpectedServerResponse", "message": "404 page not found"}
                    ]
                },
            )
        except ApiError as err:
            self._send_json(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body_quietly(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    # ------------------------------------------------------------------ discovery

    def get_version(self) -> None:
        v = self.standin.k8s_version.lstrip("v")
        major, minor = v.split(".")[:2]
        self._send_json(
            200,
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{v}",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2024-04-17T17:27:03Z",
                "goVersion": "go1.22.2",
                "compiler": "gc",
                "platform": "linux/amd64",
            },
        )

    def get_api(self) -> None:
        self._send_json(
            200,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
                ],
            },
        )

    def get_apis(self) -> None:
        groups = []
        for g in ("authorization.k8s.io", "batch", "policy"):
            gv = {"groupVersion": f"{g}/v1", "version": "v1"}
            groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
        self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def get_core(self) -> None:
        self._send_json(
            200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_RESOURCES}
        )

    def get_batch(self) -> None:
        self._send_json(
            200,
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "batch/v1",
                "resources": BATCH_RESOURCES,
            },
        )

    def get_authorization(self) -> None:
        self._send_json(
            200,
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "authorization.k8s.io/v1",
                "resources": AUTHORIZATION_RESOURCES,
            },
        )

    def post_ssar(self) -> None:
        """What the stand-in's user may do (its rules: standin.rules), as
        ``kubectl auth can-i`` asks: 201 with the review and its status."""
        body = validate_access_review(self._read_body(), self.standin.k8s_version)
        answer = {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body["spec"],
            "status": review(body["spec"], self.standin.rules),
        }
        self._send_json(201, answer)

    def get_policy(self) -> None:
        self._send_json(
            200,
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "policy/v1",
                "resources": [],
            },
        )

    # ------------------------------------------------------------------ lists and watches

    def _list(self, resource: str, namespace: str | None) -> None:
        try:
            lsel = parse_label_selector(self.query.get("labelSelector", ""))
            fsel = parse_field_selector(resource, self.query.get("fieldSelector", ""))
        except SelectorError as exc:
            raise bad_request(str(exc)) from None

        def matches(obj: Obj) -> bool:
            return lsel(obj["metadata"].get("labels") or {}) and fsel(obj)

        kind, api_version = ("Job", "batch/v1") if resource == "jobs" else ("Pod", "v1")
        if _flag(self.query.get("watch")):
            self._watch(resource, namespace, matches, kind, api_version)
            return
        store = self.standin.store
        with store.cond:
            items = [o for o in store.list(resource, namespace) if matches(o)]
            rv = store.current_rv()
        start = 0
        if self.query.get("continue"):
            try:
                start = json.loads(base64.urlsafe_b64decode(self.query["continue"]))["start"]
            except ValueError:
                raise bad_request("continue key is not valid") from None
        meta: Obj = {"resourceVersion": rv}
        limit = int(self.query.get("limit") or 0)
        page = items[start:]
        if limit and len(page) > limit:
            page = page[:limit]
            token = json.dumps({"start": start + limit, "rv": rv}).encode()
            meta["continue"] = base64.urlsafe_b64encode(token).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        for obj in page:
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
        self._send_json(
            200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": page}
        )

    def _watch(
        self, resource: str, namespace: str | None, matches: Any, kind: str, api_version: str
    ) -> None:
        rv_text = self.query.get("resourceVersion") or ""
        since = int(rv_text) if rv_text not in ("", "0") else None
        timeout = float(self.query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        for etype, obj in self.standin.store.watch(
            resource, namespace, matches, since, deadline, self.standin._stopping.is_set
        ):
            if etype != "ERROR":
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
            self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ------------------------------------------------------------------ jobs

    def get_jobs_all(self) -> None:
        self._list("jobs", None)

    def get_jobs(self, ns: str) -> None:
        self._list("jobs", ns)

    def post_jobs(self, ns: str) -> None:
        body = self._read_body()
        if body is None:
            raise bad_request(
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json, application/yaml, application/vnd.kubernetes.protobuf"
            )
        job = validate_new_job(body, ns, self.standin.k8s_version)
        store = self.standin.store
        with store.cond:
            if store.get("jobs", ns, job["metadata"]["name"]) is not None:
                raise already_exists("jobs", "batch", job["metadata"]["name"])
            job["metadata"]["uid"] = new_uid()
            default_job(job)
            created = store.create("jobs", job)
        self._send_json(201, created)

    def _get(self, resource: str, ns: str, name: str) -> Obj:
        obj = self.standin.store.get(resource, ns, name)
        if obj is None:
            raise not_found(resource, "batch" if resource == "jobs" else "", name)
        return obj

    def get_job(self, ns: str, name: str) -> None:
        self._send_json(200, self._get("jobs", ns, name))

    def patch_job(self, ns: str, name: str) -> None:
        """Merge-patch a Job (e.g. ``spec.suspend``); the controller acts on it
        at its next sync, as the real one does on the watch event."""
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if media not in PATCH_TYPES:
            self._read_body_quietly()
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json-patch+json, {', '.join(PATCH_TYPES)}, "
                "application/apply-patch+yaml",
            )
        patch = self._read_body()
        store = self.standin.store
        with store.cond:
            current = self._get("jobs", ns, name)
            new = validate_job_patch(current, patch, self.standin.k8s_version)

            def replace(job: Obj) -> None:
                job.clear()
                job.update(new)

            updated = store.update("jobs", ns, name, replace)
        self._send_json(200, updated)

    def get_job_status(self, ns: str, name: str) -> None:
        self._send_json(200, self._get("jobs", ns, name))

    def _delete_options(self) -> Obj:
        body = self._read_body() or {}
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized (must be of type DeleteOptions)")
        opts = {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}
        if "propagationPolicy" in self.query:
            opts["propagationPolicy"] = self.query["propagationPolicy"]
        if "gracePeriodSeconds" in self.query:
            try:
                opts["gracePeriodSeconds"] = int(self.query["gracePeriodSeconds"])
            except ValueError:
                raise bad_request("gracePeriodSeconds: invalid integer") from None
        if "orphanDependents" in self.query:
            opts["orphanDependents"] = _flag(self.query["orphanDependents"])
        policy = opts.get("propagationPolicy")
        errs = FieldErrors()
        if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
            errs.not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan"])
        if policy is not None and opts.get("orphanDependents") is not None:
            errs.invalid(
                "propagationPolicy",
                policy,
                "orphanDependents and deletionPropagation cannot be both set",
            )
        if errs:
            raise errs.error("DeleteOptions", "meta.k8s.io", "")
        return opts

    def delete_job(self, ns: str, name: str) -> None:
        opts = self._delete_options()
        policy = opts.get("propagationPolicy")
        headers = {}
        if policy is None:
            # batch/v1 Jobs orphan their pods by default (and the API server says so)
            policy = "Background" if opts.get("orphanDependents") is False else "Orphan"
            if opts.get("orphanDependents") is None:
                headers["Warning"] = JOB_DELETE_WARNING
        if self.query.get("dryRun") == "All":
            job = self._get("jobs", ns, name)
            self._send_json(200, self._success(job, "jobs", "batch"), headers)
            return
        gone = self.standin.controller.delete_job(ns, name, policy)
        if gone is None:
            raise not_found("jobs", "batch", name)
        self._send_json(200, self._success(gone, "jobs", "batch"), headers)

    @staticmethod
    def _success(obj: Obj, plural: str, group: str) -> Obj:
        details = {"name": obj["metadata"]["name"], "kind": plural, "uid": obj["metadata"]["uid"]}
        if group:
            details["group"] = group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # ------------------------------------------------------------------ pods

    def get_pods_all(self) -> None:
        self._list("pods", None)

    def get_pods(self, ns: str) -> None:
        self._list("pods", ns)

    def get_pod(self, ns: str, name: str) -> None:
        self._send_json(200, self._get("pods", ns, name))

    def get_pod_status(self, ns: str, name: str) -> None:
        self._send_json(200, self._get("pods", ns, name))

    def delete_pod(self, ns: str, name: str) -> None:
        opts = self._delete_options()
        grace = opts.get("gracePeriodSeconds")
        if grace is not None and grace < 0:
            grace = 1
        result = self.standin.controller.delete_pod(ns, name, grace)
        if result is None:
            raise not_found("pods", "", name)
        obj, removed = result
        self._send_json(200, obj)
        del removed

    def post_pod_eviction(self, ns: str, name: str) -> None:
        body = self._read_body()
        validate_eviction(body, self.standin.k8s_version, name)
        pod = self._get("pods", ns, name)
        grace = ((body or {}).get("deleteOptions") or {}).get("gracePeriodSeconds")
        if pod["status"].get("phase") not in ("Succeeded", "Failed"):
            from .node import pod_condition

            def disrupt(p: Obj) -> None:
                st = p["status"]
                conds = [c for c in st.get("conditions") or [] if c["type"] != "DisruptionTarget"]
                conds.append(
                    pod_condition(
                        "DisruptionTarget",
                        "True",
                        "EvictionByEvictionAPI",
                        "Eviction API: evicting",
                        old=st,
                    )
                )
                st["conditions"] = conds

            self.standin.store.update("pods", ns, name, disrupt)
        self.standin.controller.delete_pod(ns, name, grace, uid=pod["metadata"]["uid"])
        self._send_json(
            201,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
        )

    def get_pod_log(self, ns: str, name: str) -> None:
        pod = self._get("pods", ns, name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = self.query.get("container")
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {name} does not have a host assigned")
        status = next(
            (cs for cs in pod["status"].get("containerStatuses") or [] if cs["name"] == container),
            None,
        )
        ctl = self.standin.controller
        cid = ctl.container_id(pod, container)
        previous = _flag(self.query.get("previous"))
        if previous and ctl.restarts(pod, container) == 0:
            raise bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        if cid is None:
            waiting = ((status or {}).get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "ContainerCreating")
            text = {
                "ErrImagePull": "image can't be pulled",
                "ImagePullBackOff": "trying and failing to pull image",
            }.get(reason, reason)
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: {text}'
            )
        kwargs: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "timestamps": _flag(self.query.get("timestamps")),
        }
        if self.query.get("tailLines"):
            kwargs["tail"] = max(0, int(self.query["tailLines"]))
        if self.query.get("sinceSeconds"):
            kwargs["since"] = int(time.time() - int(self.query["sinceSeconds"]))
        limit = int(self.query.get("limitBytes") or 0)
        cli = ctl.client()
        try:
            if _flag(self.query.get("follow")):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                for chunk in cli.api.logs(cid, stream=True, follow=True, **kwargs):
                    if limit:
                        chunk = chunk[: max(0, limit - sent)]
                    if chunk:
                        self._chunk(chunk)
                        sent += len(chunk)
                    if limit and sent >= limit:
                        break
                self.wfile.write(b"0\r\n\r\n")
                return
            data = cli.api.logs(cid, **kwargs)
        except docker.errors.NotFound:
            raise bad_request(f'container "{container}" in pod "{name}" is terminated') from None
        if limit:
            data = data[:limit]
        self._send_text(200, data)

    # ------------------------------------------------------------------ others

    def get_pvc(self, ns: str, name: str) -> None:
        if name not in self.standin.pvcs:
            raise not_found("persistentvolumeclaims", "", name)
        self._send_json(200, self.standin.pvc_object(ns, name))

    def get_pvcs(self, ns: str) -> None:
        items = [self.standin.pvc_object(ns, n) for n in sorted(self.standin.pvcs)]
        self._send_json(
            200,
            {
                "kind": "PersistentVolumeClaimList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": self.standin.store.current_rv()},
                "items": items,
            },
        )

    def get_namespace(self, ns: str) -> None:
        self._send_json(
            200,
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": ns,
                    "uid": self.standin.namespace_uid(ns),
                    "resourceVersion": "1",
                    "creationTimestamp": self.standin.started_at,
                    "labels": {"kubernetes.io/metadata.name": ns},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )


assert HTTPStatus  # keep the import for readers of status codes
