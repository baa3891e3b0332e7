"""The Kubernetes API calls pman makes, through the official ``kubernetes`` client.

Objects are read as the API's own JSON (``_preload_content=False``): the
state is computed from the same camelCase fields the Kubernetes docs describe,
and a tracker cycle over many jobs does not pay for the client's model
classes. Every call's errors become pman errors here (:mod:`.errors`); an
answer that means "not there" is None or nothing, for the adapter to word.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pman.backends.kubernetes.config import KubernetesConfig
from pman.backends.kubernetes.errors import translator
from pman.backends.kubernetes.manifest import CONTAINER_NAME
from pman.errors import ConfigError
from pman.labels import LABEL_JID, LABEL_MANAGED

#: seconds a watch request lasts before pman opens a new one
WATCH_SECONDS = 300
#: how often a followed pod's log that cannot be read yet is asked for again
FOLLOW_POLL_S = 1.0
#: the label selector of every object pman made
MANAGED = f"{LABEL_MANAGED}=true"


def api_client(config: KubernetesConfig) -> kubernetes.client.ApiClient:
    """The client for KUBECONFIG, ~/.kube/config, or the pod's ServiceAccount
    inside a cluster; a ConfigError if none can be loaded. No network call."""
    try:
        if config.kubeconfig or not config.in_cluster:
            return kubernetes.config.new_client_from_config(
                config_file=config.kubeconfig, persist_config=False
            )
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        return kubernetes.client.ApiClient(configuration)
    except (ConfigException, OSError) as e:
        where = config.kubeconfig or "~/.kube/config"
        raise ConfigError(
            f"cannot load the Kubernetes client configuration ({where}): {e}",
            fields={"KUBECONFIG": str(e)},
        ) from e


class KubeClient:
    """pman's Jobs and their pods in one namespace."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, timeout: float) -> None:
        self.api = api
        self.batch = kubernetes.client.BatchV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.timeout = timeout
        self.errors = translator(self.describe(), timeout)

    def describe(self) -> str:
        return f"Kubernetes API at {self.api.configuration.host} (namespace {self.namespace})"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()

    def _call(self, method: Any, doing: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call, its JSON answer as a dict."""
        with self.errors.doing(doing):
            response = method(
                *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
            )
            return json.loads(response.data or b"{}")

    # ---------------------------------------------------------------- Jobs
    def create_job(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The Job as created; None if a Job of that name exists already."""
        name = body["metadata"]["name"]
        with self.errors.doing(f"creating Job {name!r}"):
            try:
                response = self.batch.create_namespaced_job(
                    self.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
            except ApiException as e:
                if e.status == 409:
                    return None
                raise
            return json.loads(response.data)

    def owned_job(self, name: str) -> dict[str, Any] | None:
        """A Job pman created, None if there is none (others are not jobs: untouched)."""
        with self.errors.doing(f"reading Job {name!r}"):
            try:
                response = self.batch.read_namespaced_job(
                    name, self.namespace, _preload_content=False, _request_timeout=self.timeout
                )
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            job: dict[str, Any] = json.loads(response.data)
        if (job.get("metadata", {}).get("labels") or {}).get(LABEL_MANAGED) != "true":
            return None
        return job

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        # the Job's own selector (its controller-uid): a Job re-made under the
        # same name never sees the pods of the one before
        match = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        if not selector:
            selector = f"{LABEL_JID}={job['metadata']['name']}"
        return self._items(
            self.core.list_namespaced_pod,
            f"listing the pods of Job {job['metadata']['name']!r}",
            selector,
        )

    def managed_jobs(self) -> list[dict[str, Any]]:
        return self._items(self.batch.list_namespaced_job, "listing pman's Jobs", MANAGED)

    def managed_pods(self) -> list[dict[str, Any]]:
        return self._items(self.core.list_namespaced_pod, "listing pman's pods", MANAGED)

    def _items(self, method: Any, doing: str, selector: str) -> list[dict[str, Any]]:
        """The objects a list call with this label selector finds in the namespace."""
        found = self._call(method, doing, self.namespace, label_selector=selector)
        return found.get("items") or []

    def suspend_job(self, name: str) -> None:
        self._call(
            self.batch.patch_namespaced_job,
            f"suspending Job {name!r}",
            name,
            self.namespace,
            {"spec": {"suspend": True}},
        )

    def delete_job(self, name: str, uid: str) -> None:
        """Delete the Job of that uid; one gone already (or re-made) is left alone."""
        with self.errors.doing(f"deleting Job {name!r}"):
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
                raise

    def watch_jobs(self) -> urllib3.HTTPResponse:
        """A watch on pman's Jobs from now on, as an unread response."""
        # from the list's resourceVersion: only what changes from now on, not
        # an ADDED event for every Job there is
        listed = self._call(
            self.batch.list_namespaced_job,
            "listing pman's Jobs",
            self.namespace,
            label_selector=MANAGED,
            limit=1,
        )
        with self.errors.doing("opening a watch on pman's Jobs"):
            return self.batch.list_namespaced_job(
                self.namespace,
                label_selector=MANAGED,
                watch=True,
                resource_version=(listed.get("metadata") or {}).get("resourceVersion"),
                timeout_seconds=WATCH_SECONDS,
                allow_watch_bookmarks=False,
                _preload_content=False,
                # connect within the usual time; then reads may wait as long as the watch
                _request_timeout=(self.timeout, WATCH_SECONDS + self.timeout),
            )

    def ping(self) -> None:
        # a list in the namespace pman works in: reachable, and allowed to
        self._call(self.batch.list_namespaced_job, "answering a ping", self.namespace, limit=1)

    # ---------------------------------------------------------------- pod logs
    def pod_log(self, pod: str, tail: int) -> str:
        """The pod's last ``tail`` log lines; "" for a pod not started yet, or gone."""
        with self.errors.doing(f"reading the logs of pod {pod!r}"):
            try:
                response = self.core.read_namespaced_pod_log(
                    pod,
                    self.namespace,
                    container=CONTAINER_NAME,
                    tail_lines=tail,
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            except ApiException as e:
                if e.status in (400, 404):
                    return ""  # not started yet (400 "waiting to start"), or gone
                raise
            return response.data.decode("utf-8", errors="replace").replace("\r", "")

    def open_pod_log(
        self, pod: str, follow: bool, options: dict[str, Any], stop: threading.Event
    ) -> urllib3.HTTPResponse | None:
        """The pod's log response, unread; None for a pod with no log (yet).
        Following, a pod waiting to start is waited for until ``stop`` is set."""
        while True:
            with self.errors.doing(f"reading the logs of pod {pod!r}"):
                try:
                    return self.core.read_namespaced_pod_log(
                        pod,
                        self.namespace,
                        container=CONTAINER_NAME,
                        follow=follow,
                        _preload_content=False,
                        # a followed pod may be quiet for long: its stream ends with it
                        _request_timeout=None if follow else self.timeout,
                        **options,
                    )
                except ApiException as e:
                    if e.status not in (400, 404):
                        raise
                    if e.status == 404 or not follow:
                        return None  # gone, or not started yet
            # following a pod "waiting to start" (400): it will
            if stop.wait(FOLLOW_POLL_S):
                return None
