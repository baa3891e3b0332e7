"""The stand-in's control plane: Job controller, garbage collector and TTL controller, plus the
scheduler (scheduler.py) and the kubelet loop (node.py) that runs each pod as real containers.

One background thread ticks every ``TICK`` seconds.  It reads objects from the store, works
with Docker outside the store's lock, and writes back through ``Store.update`` (which only
bumps a resourceVersion when something changed).  Graceful container kills run in a small
thread pool so that a long grace period does not hold up the tick.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from kubernetes.utils import parse_quantity

from . import kubelet as kl
from .node import Node, PodRuntime
from .scheduler import Scheduler
from .store import Obj, Store, now_rfc3339, parse_rfc3339, rfc3339
from .validation import default_pod_spec, random_suffix

TICK = 0.2
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def owner_uid(pod: Obj) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return ref["uid"]
    return None


def condition(ctype: str, status: str, reason: str = "", message: str = "") -> Obj:
    now = now_rfc3339()
    cond: Obj = {"type": ctype, "status": status, "lastProbeTime": now, "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def index_ranges(indexes: set[int]) -> str:
    out, items = [], sorted(indexes)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def qos_class(pod: Obj) -> str:
    containers = pod["spec"].get("containers") or []
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        lim, req = res.get("limits") or {}, res.get("requests") or {}
        if lim or req:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and parse_quantity(req[r]) != parse_quantity(lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


@dataclass
class JobState:
    """What the Job controller remembers between syncs (the real one uses pod finalizers)."""

    counted: dict[str, str] = field(default_factory=dict)  # pod uid -> "succeeded"|"failed"
    seen: dict[str, Obj] = field(default_factory=dict)  # pod uid -> last seen pod
    succeeded_indexes: set[int] = field(default_factory=set)
    next_create_at: float = 0.0
    last_failed: int = 0


class Controller(Scheduler, Node):
    """Scheduler + Job controller + GC + TTL + kubelet, on one background thread."""

    def __init__(self, store: Store, cfg: Any, docker_url: str, instance: str) -> None:
        self.store = store
        self.cfg = cfg
        self.instance = instance
        self.docker_url = docker_url
        self.docker = docker.DockerClient(base_url=docker_url)
        self._local = threading.local()
        self.jobs: dict[str, JobState] = {}
        self.pods: dict[str, PodRuntime] = {}  # pod uid -> runtime
        self.lock = threading.RLock()  # guards self.pods
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="standin-kill")
        self.scratch = Path(cfg.scratch)
        self._ip = 1
        self._thread = threading.Thread(target=self._run, name="standin-controller", daemon=True)
        self.errors: list[str] = []

    # ------------------------------------------------------------------ plumbing

    def client(self) -> docker.DockerClient:
        """A Docker client for the calling thread."""
        cli = getattr(self._local, "client", None)
        if cli is None:
            cli = docker.DockerClient(base_url=self.docker_url)
            self._local.client = cli
        return cli

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.pool.shutdown(wait=True, cancel_futures=True)
        for cid in self.container_ids():
            with contextlib.suppress(docker.errors.APIError):
                self.docker.api.remove_container(cid, force=True, v=True)
        kl.remove_tree(self.scratch)
        self.docker.close()

    def container_ids(self) -> list[str]:
        found = self.docker.api.containers(
            all=True, filters={"label": f"{kl.LABEL}={self.instance}"}
        )
        return [c["Id"] for c in found]

    def _run(self) -> None:
        while not self.stop_event.wait(TICK):
            try:
                self.tick()
            except Exception as exc:  # keep the control plane alive; tests can inspect errors
                import traceback

                self.errors.append(traceback.format_exc())
                if len(self.errors) > 50:
                    del self.errors[:10]
                del exc

    def tick(self) -> None:
        self.kubelet_sync()
        self.gc_sync()
        self.job_sync()
        self.schedule_sync()

    # ------------------------------------------------------------------ garbage collection

    def gc_sync(self) -> None:
        jobs = {j["metadata"]["uid"] for j in self.store.list("jobs")}
        for pod in self.store.list("pods"):
            uid = owner_uid(pod)
            if uid is not None and uid not in jobs and not pod["metadata"].get("deletionTimestamp"):
                md = pod["metadata"]
                self.delete_pod(md["namespace"], md["name"], None, uid=md["uid"])
        for uid in list(self.jobs):
            if uid not in jobs:
                del self.jobs[uid]

    # ------------------------------------------------------------------ job controller

    def _v131(self) -> bool:
        major, minor = (int(x) for x in self.cfg.k8s_version.lstrip("v").split(".")[:2])
        return (major, minor) >= (1, 31)

    def _new_pod(self, job: Obj, index: int | None) -> Obj:
        jmd = job["metadata"]
        tmpl = copy.deepcopy(job["spec"]["template"])
        tmd = tmpl.get("metadata") or {}
        labels = dict(tmd.get("labels") or {})
        annotations = dict(tmd.get("annotations") or {})
        spec = tmpl["spec"]
        prefix = f"{jmd['name']}-"
        if index is not None:
            prefix = f"{jmd['name']}-{index}-"
            labels[INDEX_KEY] = str(index)
            annotations[INDEX_KEY] = str(index)
            spec.setdefault("hostname", f"{jmd['name']}-{index}"[:63].rstrip("-."))
            spec.setdefault("subdomain", jmd["name"][:63])
            for c in spec.get("containers", []) + (spec.get("initContainers") or []):
                env = [e for e in c.get("env") or [] if e["name"] != "JOB_COMPLETION_INDEX"]
                c["env"] = [
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {
                                "apiVersion": "v1",
                                "fieldPath": f"metadata.annotations['{INDEX_KEY}']",
                            }
                        },
                    },
                    *env,
                ]
        md: Obj = {
            "name": prefix + random_suffix(),
            "generateName": prefix,
            "namespace": jmd["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": jmd["name"],
                    "uid": jmd["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if annotations:
            md["annotations"] = annotations
        return self.new_pod_object(md, spec)

    def new_pod_object(self, md: Obj, spec: Obj) -> Obj:
        """A Pod as the API server stores it after defaulting and admission."""
        default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key for t in tolerations):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                )
        for c in spec.get("containers", []) + (spec.get("initContainers") or []):
            res = c.get("resources") or {}
            if res.get("limits"):
                req = res.setdefault("requests", {})
                for k, v in res["limits"].items():
                    req.setdefault(k, v)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec, "status": {}}
        pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod)}
        return pod

    def job_sync(self) -> None:
        pods_by_owner: dict[str, list[Obj]] = {}
        for pod in self.store.list("pods"):
            uid = owner_uid(pod)
            if uid is not None:
                pods_by_owner.setdefault(uid, []).append(pod)
        for job in self.store.list("jobs"):
            if job["metadata"].get("deletionTimestamp"):
                continue
            self._sync_job(job, pods_by_owner.get(job["metadata"]["uid"], []))

    def _finished(self, job: Obj) -> Obj | None:
        for c in job.get("status", {}).get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return c
        return None

    def _sync_job(self, job: Obj, pods: list[Obj]) -> None:
        md, spec = job["metadata"], job["spec"]
        ns, name, uid = md["namespace"], md["name"], md["uid"]
        st = self.jobs.setdefault(uid, JobState())
        now = time.time()
        done = self._finished(job)
        if done is not None:
            for pod in pods:  # whatever is left active goes
                if pod["status"].get("phase") not in ("Succeeded", "Failed"):
                    self.delete_pod(ns, pod["metadata"]["name"], None, uid=pod["metadata"]["uid"])
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and now >= parse_rfc3339(done["lastTransitionTime"]) + ttl:
                self.delete_job(ns, name, "Background", uid=uid)
            return
        indexed = spec.get("completionMode") == "Indexed"
        current = {p["metadata"]["uid"]: p for p in pods}
        # pods that vanished before they finished count as failed, as with tracking finalizers
        for puid, _last in list(st.seen.items()):
            if puid not in current and puid not in st.counted:
                st.counted[puid] = "failed"
        active, terminating, ready = [], 0, 0
        for pod in pods:
            puid = pod["metadata"]["uid"]
            st.seen[puid] = pod
            phase = pod["status"].get("phase")
            if phase == "Succeeded":
                if puid not in st.counted:
                    st.counted[puid] = "succeeded"
                    idx = (pod["metadata"].get("annotations") or {}).get(INDEX_KEY)
                    if indexed and idx is not None:
                        st.succeeded_indexes.add(int(idx))
            elif phase == "Failed":
                st.counted.setdefault(puid, "failed")
            elif pod["metadata"].get("deletionTimestamp"):
                terminating += 1
            else:
                active.append(pod)
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"].get("conditions") or []
                ):
                    ready += 1
        succeeded = sum(1 for v in st.counted.values() if v == "succeeded")
        failed = sum(1 for v in st.counted.values() if v == "failed")
        if failed > st.last_failed and self.cfg.job_backoff:
            # the real controller waits 10 s, doubling per failure (at most 6 min), to replace
            st.next_create_at = now + min(360.0, self.cfg.job_backoff * 2 ** (failed - 1))
        st.last_failed = failed
        if spec.get("template", {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            restarts = sum(
                cs.get("restartCount", 0)
                for p in active
                for cs in p["status"].get("containerStatuses") or []
            )
        else:
            restarts = 0
        completions = spec.get("completions")
        spec.get("parallelism", 1)
        start_time = job.get("status", {}).get("startTime")
        finish: tuple[str, str, str] | None = None  # (type, reason, message)
        if failed > spec.get("backoffLimit", 6) or (
            restarts and restarts >= max(1, spec.get("backoffLimit", 6))
        ):
            finish = (
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        elif (
            spec.get("activeDeadlineSeconds") is not None
            and start_time
            and now >= parse_rfc3339(start_time) + spec["activeDeadlineSeconds"]
        ):
            finish = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif (
            (indexed and len(st.succeeded_indexes) >= (completions or 0))
            or (not indexed and completions is not None and succeeded >= completions)
            or (not indexed and completions is None and succeeded > 0 and not active)
        ):
            finish = ("Complete", "", "")
        if finish is not None:
            for pod in active:
                self.delete_pod(ns, pod["metadata"]["name"], None, uid=pod["metadata"]["uid"])
                if finish[0] == "Failed":
                    st.counted[pod["metadata"]["uid"]] = "failed"
            failed = sum(1 for v in st.counted.values() if v == "failed")
            terminating += len(active)
            active = []
        elif not spec.get("suspend"):
            active += self._create_pods(job, st, active, succeeded, now)
        else:
            for pod in active:
                self.delete_pod(ns, pod["metadata"]["name"], None, uid=pod["metadata"]["uid"])
            active = []

        def status(j: Obj) -> None:
            s = j.setdefault("status", {})
            created = st.seen or active
            if created and not s.get("startTime") and not spec.get("suspend"):
                s["startTime"] = now_rfc3339()
            if spec.get("suspend") and not any(
                c["type"] == "Suspended" for c in s.get("conditions") or []
            ):
                s.setdefault("conditions", []).append(
                    condition("Suspended", "True", "JobSuspended", "Job suspended")
                )
            for key, val in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
                if val:
                    s[key] = val
                else:
                    s.pop(key, None)
            s["ready"] = 0 if finish else ready
            s["terminating"] = terminating
            s["uncountedTerminatedPods"] = {}
            if indexed:
                if st.succeeded_indexes:
                    s["completedIndexes"] = index_ranges(st.succeeded_indexes)
                else:
                    s.pop("completedIndexes", None)
            if finish is not None:
                ctype, reason, message = finish
                conds = s.setdefault("conditions", [])
                if self._v131():
                    first = "FailureTarget" if ctype == "Failed" else "SuccessCriteriaMet"
                    if ctype == "Complete":
                        reason, message = (
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        )
                    conds.append(condition(first, "True", reason, message))
                conds.append(condition(ctype, "True", reason, message))
                if ctype == "Complete":
                    s["completionTime"] = now_rfc3339()

        self.store.update("jobs", ns, name, status)
        # forget pods that are gone and already counted
        for puid in list(st.seen):
            if puid not in current:
                del st.seen[puid]

    def _create_pods(
        self, job: Obj, st: JobState, active: list[Obj], succeeded: int, now: float
    ) -> list[Obj]:
        """Create the pods the Job lacks; returns them (they count as active at once)."""
        spec = job["spec"]
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        if now < st.next_create_at:
            return []
        to_create: list[int | None] = []
        if spec.get("completionMode") == "Indexed":
            busy = {
                int((p["metadata"].get("annotations") or {}).get(INDEX_KEY, -1)) for p in active
            }
            todo = [
                i
                for i in range(completions or 0)
                if i not in st.succeeded_indexes and i not in busy
            ]
            to_create = list(todo[: max(0, parallelism - len(active))])
        else:
            if completions is None:
                want = parallelism if succeeded == 0 else 0
            else:
                want = min(parallelism, completions - succeeded)
            to_create = [None] * max(0, want - len(active))
        created = []
        for index in to_create:
            pod = self._new_pod(job, index)
            for _ in range(5):
                try:
                    created.append(self.store.create("pods", pod))
                    break
                except KeyError:
                    pod["metadata"]["name"] = pod["metadata"]["generateName"] + random_suffix()
        return created

    # ------------------------------------------------------------------ deletion

    def delete_job(
        self, namespace: str, name: str, policy: str, uid: str | None = None
    ) -> Obj | None:
        """Remove a Job now; its pods go (Background/Foreground) or lose their owner (Orphan)."""
        gone = self.store.delete("jobs", namespace, name, uid=uid)
        if gone is None:
            return None
        juid = gone["metadata"]["uid"]
        for pod in self.store.list("pods", namespace):
            if owner_uid(pod) != juid:
                continue
            pmd = pod["metadata"]
            if policy == "Orphan":

                def orphan(p: Obj) -> None:
                    p["metadata"]["ownerReferences"] = [
                        r for r in p["metadata"].get("ownerReferences") or [] if r["uid"] != juid
                    ]
                    if not p["metadata"]["ownerReferences"]:
                        del p["metadata"]["ownerReferences"]

                self.store.update("pods", namespace, pmd["name"], orphan)
            elif policy == "Foreground":
                self.delete_pod(namespace, pmd["name"], None, uid=pmd["uid"])
            # Background: the garbage collector's next pass deletes them
        return gone

    def delete_pod(
        self, namespace: str, name: str, grace: int | None, uid: str | None = None
    ) -> tuple[Obj, bool] | None:
        """Delete a pod as the API server does; returns (object, removed-at-once) or None.

        Unscheduled and finished pods, and grace 0, go at once; others get deletionTimestamp
        and the kubelet kills their containers (SIGTERM, grace, SIGKILL) before removing them.
        """
        with self.store.cond:
            pod = self.store.get("pods", namespace, name)
            if pod is None or (uid is not None and pod["metadata"]["uid"] != uid):
                return None
            if pod["metadata"].get("deletionTimestamp"):
                if grace == 0:
                    gone = self.store.delete("pods", namespace, name)
                    return (gone, True) if gone else None
                return pod, False
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            immediate = (
                grace == 0
                or not pod["spec"].get("nodeName")
                or pod["status"].get("phase") in ("Succeeded", "Failed")
            )
            if immediate:
                gone = self.store.delete("pods", namespace, name)
                return (gone, True) if gone else None

            def mark(p: Obj) -> None:
                p["metadata"]["deletionTimestamp"] = rfc3339(time.time() + grace)
                p["metadata"]["deletionGracePeriodSeconds"] = grace

            return self.store.update("pods", namespace, name, mark), False  # type: ignore[return-value]
