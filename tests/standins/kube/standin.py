"""A stand-in Kubernetes API server for testing pman's Kubernetes backend without a cluster.

It serves the core/v1 and batch/v1 paths that the official ``kubernetes`` client uses, checks
every body against the real OpenAPI schemas (``kubernetes_validate``, strict) plus the API
server's own validation rules, answers errors as real ``Status`` objects, and plays the Job
controller, scheduler, garbage collector, TTL controller and kubelet of a one-node cluster,
running each pod as a real Docker container.  See README.md beside this file.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from .api import Handler
from .controller import Controller
from .rbac import Rules
from .store import Store, now_rfc3339

DEFAULT_NODE = "standin-node"


@dataclass
class Config:
    k8s_version: str
    pvcs: dict[str, Path]
    nfs_exports: dict[str, Path]
    node_labels: dict[str, str]
    node_allocatable: dict[str, str]
    node_taints: list[dict[str, str]]
    image_pull_backoff_after: float
    grace_period_cap: float
    job_backoff: float
    node_name: str = DEFAULT_NODE
    scratch: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="k8s-standin-"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: KubeStandin

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that closes a kept-alive connection is no error of the server's
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class KubeStandin:
    """A one-node Kubernetes API server + control plane + kubelet, over Docker.

    ``grace_period_cap`` caps the grace period the kubelet waits between SIGTERM and SIGKILL
    (the real one waits the pod's full terminationGracePeriodSeconds, 30 s by default), and
    ``job_backoff`` is the delay before the Job controller replaces a failed pod (the real one
    backs off 10 s, doubling): both keep tests fast.
    """

    def __init__(
        self,
        docker_url: str = "unix:///var/run/docker.sock",
        k8s_version: str = "1.30.0",
        token: str | None = None,
        pvcs: dict[str, Path] | None = None,
        nfs_exports: dict[str, Path] | None = None,
        node_labels: dict[str, str] | None = None,
        node_allocatable: dict[str, str] | None = None,
        node_taints: list[dict[str, str]] | None = None,
        image_pull_backoff_after: float = 1.0,
        grace_period_cap: float = 1.0,
        job_backoff: float = 0.0,
        rules: list[dict[str, list[str]]] | None = None,
    ) -> None:
        self.k8s_version = k8s_version.lstrip("v")
        self.token = token
        #: what its user may do (rbac.py): enforced on every request, and
        #: answered by SelfSubjectAccessReview; None: everything it serves
        self.rules = Rules(rules)
        self.pvcs = {k: Path(v) for k, v in (pvcs or {}).items()}
        labels = {
            "kubernetes.io/hostname": DEFAULT_NODE,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        }
        labels.update(node_labels or {})
        self.config = Config(
            k8s_version=self.k8s_version,
            pvcs=self.pvcs,
            nfs_exports={k: Path(v) for k, v in (nfs_exports or {}).items()},
            node_labels=labels,
            node_allocatable=dict(node_allocatable or {"cpu": "2", "memory": "4Gi", "pods": "110"}),
            node_taints=list(node_taints or []),
            image_pull_backoff_after=image_pull_backoff_after,
            grace_period_cap=grace_period_cap,
            job_backoff=job_backoff,
            node_name=labels["kubernetes.io/hostname"],
        )
        self.instance = uuid.uuid4().hex[:12]
        self.store = Store()
        self.controller = Controller(self.store, self.config, docker_url, self.instance)
        self.requests: list[tuple[str, str, str]] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ns_uids: dict[str, str] = {}
        self.started_at = now_rfc3339()
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Serve on 127.0.0.1 (a free port) in a background thread; returns the base URL."""
        server = _Server(("127.0.0.1", 0), Handler)
        server.standin = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="standin-http",
            daemon=True,
        )
        self._thread.start()
        self.controller.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        """Stop serving and the controller; force-remove every container this stand-in made."""
        self._stopping.set()
        with self.store.cond:
            self.store.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.controller.stop()

    def __enter__(self) -> KubeStandin:
        if not self.url:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context reaches this stand-in (bearer token if any)."""
        path = Path(path)
        user: dict[str, Any] = {"token": self.token} if self.token is not None else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": user}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": namespace},
                }
            ],
            "current-context": "standin",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def evict(
        self, namespace: str, pod_name: str, message: str = "The node was low on resource: memory."
    ) -> None:
        """Kubelet node-pressure eviction: the pod's containers killed, the pod Failed/Evicted."""
        self.controller.evict(namespace, pod_name, message)

    def containers(self) -> list[str]:
        """Ids of the Docker containers this stand-in currently has."""
        return self.controller.container_ids()

    def controller_errors(self) -> list[str]:
        """Tracebacks of exceptions the control loop caught (empty when all is well)."""
        return list(self.controller.errors)

    def _record(self, method: str, path: str, query: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path, query))

    def namespace_uid(self, ns: str) -> str:
        return self._ns_uids.setdefault(ns, str(uuid.uuid4()))

    def pvc_object(self, ns: str, name: str) -> dict[str, Any]:
        return {
            "kind": "PersistentVolumeClaim",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": self.namespace_uid(f"{ns}/{name}"),
                "resourceVersion": "1",
                "creationTimestamp": self.started_at,
            },
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "volumeName": f"pv-{name}",
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "standard",
                "volumeMode": "Filesystem",
            },
            "status": {
                "phase": "Bound",
                "accessModes": ["ReadWriteMany"],
                "capacity": {"storage": "1Gi"},
            },
        }
