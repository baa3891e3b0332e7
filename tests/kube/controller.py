"""The stand-in's control plane: scheduler, Job controller, garbage collector, TTL controller,
and the kubelet loop that runs each scheduled pod as a real Docker container.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from kubernetes.utils import parse_quantity

from . import kubelet as kl
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


def pod_condition(
    ctype: str, status: str, reason: str = "", message: str = "", old: Obj | None = None
) -> Obj:
    prev = next((c for c in (old or {}).get("conditions") or [] if c["type"] == ctype), None)
    cond: Obj = {"type": ctype, "status": status, "lastProbeTime": None}
    cond["lastTransitionTime"] = (
        prev["lastTransitionTime"] if prev and prev["status"] == status else now_rfc3339()
    )
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


def pod_requests(pod: Obj) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        req = dict(res.get("limits") or {})
        req.update(res.get("requests") or {})
        for k, v in req.items():
            total[k] = total.get(k, 0) + parse_quantity(v)
    for c in pod["spec"].get("initContainers") or []:
        res = c.get("resources") or {}
        req = dict(res.get("limits") or {})
        req.update(res.get("requests") or {})
        for k, v in req.items():
            total[k] = max(total.get(k, 0), parse_quantity(v))
    return total


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


@dataclass
class PodRuntime:
    """What the kubelet knows about one pod it runs."""

    uid: str
    namespace: str
    name: str
    scratch: Path
    admitted: float = field(default_factory=time.time)
    pod_ip: str = ""
    containers: dict[str, str] = field(default_factory=dict)  # container name -> docker id
    terminated: dict[str, Obj] = field(default_factory=dict)  # container name -> terminated state
    last_state: dict[str, Obj] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    pull_failed_at: dict[str, tuple[float, int]] = field(default_factory=dict)
    started_at: dict[str, str] = field(default_factory=dict)
    killing: bool = False
    done: bool = False  # phase is final: nothing more to do but wait for deletion


class Controller:
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

    # ------------------------------------------------------------------ scheduler

    def _unschedulable_reason(self, pod: Obj, scheduled: list[Obj]) -> str | None:
        cfg = self.cfg
        spec = pod["spec"]
        helpless = (
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        )
        for vol in spec.get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and claim not in cfg.pvcs:
                return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found. {helpless}'
        for taint in cfg.node_taints:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(self._tolerates(t, taint) for t in spec.get("tolerations") or []):
                return (
                    "0/1 nodes are available: 1 node(s) had untolerated taint "
                    f"{{{taint['key']}: {taint.get('value', '')}}}. {helpless}"
                )
        if not self._affinity_ok(spec):
            return f"0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. {helpless}"
        want = pod_requests(pod)
        used: dict[str, Any] = {"pods": parse_quantity(len(scheduled))}
        for other in scheduled:
            for k, v in pod_requests(other).items():
                used[k] = used.get(k, 0) + v
        want["pods"] = parse_quantity(1)
        short = []
        for res, qty in sorted(want.items()):
            if qty == 0:
                continue
            alloc = parse_quantity(cfg.node_allocatable.get(res, "0"))
            if used.get(res, 0) + qty > alloc:
                short.append(f"1 Insufficient {res}" if res != "pods" else "1 Too many pods")
        if short:
            return (
                f"0/1 nodes are available: {', '.join(short)}. preemption: 0/1 nodes are available: "
                "1 No preemption victims found for incoming pod."
            )
        return None

    @staticmethod
    def _tolerates(tol: Obj, taint: Obj) -> bool:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            return False
        if tol.get("operator") == "Exists":
            return not tol.get("key") or tol["key"] == taint["key"]
        return tol.get("key") == taint["key"] and tol.get("value", "") == taint.get("value", "")

    def _affinity_ok(self, spec: Obj) -> bool:
        labels = self.cfg.node_labels
        for k, v in (spec.get("nodeSelector") or {}).items():
            if labels.get(k) != v:
                return False
        req = (
            ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
        ) or {}
        terms = req.get("nodeSelectorTerms") or []
        if not terms:
            return True

        def expr_ok(e: Obj) -> bool:
            key, op, vals = e["key"], e["operator"], e.get("values") or []
            have = labels.get(key)
            if op == "In":
                return have in vals
            if op == "NotIn":
                return have not in vals
            if op == "Exists":
                return key in labels
            if op == "DoesNotExist":
                return key not in labels
            if op in ("Gt", "Lt") and have is not None and have.isdigit() and vals:
                return int(have) > int(vals[0]) if op == "Gt" else int(have) < int(vals[0])
            return False

        return any(
            all(expr_ok(e) for e in t.get("matchExpressions") or [])
            and (t.get("matchExpressions") or t.get("matchFields"))
            for t in terms
        )

    def schedule_sync(self) -> None:
        pods = self.store.list("pods")
        scheduled = [
            p for p in pods
            if p["spec"].get("nodeName") and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]  # fmt: skip
        for pod in pods:
            md = pod["metadata"]
            if pod["spec"].get("nodeName") or md.get("deletionTimestamp"):
                continue
            why = self._unschedulable_reason(pod, scheduled)
            if why is None:

                def bind(p: Obj) -> None:
                    p["spec"]["nodeName"] = self.cfg.node_name
                    st = p["status"]
                    conds = [c for c in st.get("conditions") or [] if c["type"] != "PodScheduled"]
                    st["conditions"] = [*conds, pod_condition("PodScheduled", "True", old=st)]

                if self.store.update("pods", md["namespace"], md["name"], bind):
                    scheduled.append(pod)
            else:

                def unschedulable(p: Obj, why: str = why) -> None:
                    st = p["status"]
                    st["phase"] = "Pending"
                    st["conditions"] = [
                        pod_condition("PodScheduled", "False", "Unschedulable", why, old=st)
                    ]

                self.store.update("pods", md["namespace"], md["name"], unschedulable)

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
        for puid, last in list(st.seen.items()):
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
        if spec.get("template", {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            restarts = sum(
                cs.get("restartCount", 0)
                for p in active
                for cs in p["status"].get("containerStatuses") or []
            )
        else:
            restarts = 0
        completions = spec.get("completions")
        parallelism = spec.get("parallelism", 1)
        start_time = job.get("status", {}).get("startTime")
        finish: tuple[str, str, str] | None = None  # (type, reason, message)
        if failed > spec.get("backoffLimit", 6) or (
            restarts and restarts > spec.get("backoffLimit", 6)
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
        elif indexed and len(st.succeeded_indexes) >= (completions or 0):
            finish = ("Complete", "", "")
        elif not indexed and completions is not None and succeeded >= completions:
            finish = ("Complete", "", "")
        elif not indexed and completions is None and succeeded > 0 and not active:
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
            self._create_pods(job, st, active, succeeded, now)
        else:
            for pod in active:
                self.delete_pod(ns, pod["metadata"]["name"], None, uid=pod["metadata"]["uid"])
            active = []

        def status(j: Obj) -> None:
            s = j.setdefault("status", {})
            created = st.seen or active
            if created and not s.get("startTime") and not spec.get("suspend"):
                s["startTime"] = now_rfc3339()
            if not created and not s.get("startTime"):
                # nothing created yet (suspended): still a status the controller wrote
                pass
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
    ) -> None:
        spec = job["spec"]
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        if now < st.next_create_at:
            return
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
        for index in to_create:
            pod = self._new_pod(job, index)
            for _ in range(5):
                try:
                    self.store.create("pods", pod)
                    break
                except KeyError:
                    pod["metadata"]["name"] = pod["metadata"]["generateName"] + random_suffix()
        if to_create and self.cfg.job_backoff:
            st.next_create_at = now + self.cfg.job_backoff

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

    # ------------------------------------------------------------------ kubelet

    def _runtime(self, pod: Obj) -> PodRuntime:
        md = pod["metadata"]
        with self.lock:
            rt = self.pods.get(md["uid"])
            if rt is None:
                self._ip += 1
                rt = PodRuntime(md["uid"], md["namespace"], md["name"], self.scratch / md["uid"])
                rt.pod_ip = f"10.244.0.{self._ip % 250 + 2}"
                self.pods[md["uid"]] = rt
            return rt

    def kubelet_sync(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self.store.list("pods")}
        listing = self.client().api.containers(
            all=True, filters={"label": f"{kl.LABEL}={self.instance}"}
        )
        by_id = {c["Id"]: c for c in listing}
        # containers and scratch folders whose pod is gone from the API
        for c in listing:
            puid = c["Labels"].get(f"{kl.LABEL}.pod-uid")
            if puid not in pods:
                with self.lock:
                    rt = self.pods.get(puid)
                    busy = rt is not None and rt.killing
                if not busy:
                    with contextlib.suppress(docker.errors.APIError):
                        self.client().api.remove_container(c["Id"], force=True, v=True)
        with self.lock:
            gone = [uid for uid, rt in self.pods.items() if uid not in pods and not rt.killing]
            for uid in gone:
                kl.remove_tree(self.pods.pop(uid).scratch)
        for pod in pods.values():
            if pod["spec"].get("nodeName") != self.cfg.node_name:
                continue
            md = pod["metadata"]
            rt = self._runtime(pod)
            if md.get("deletionTimestamp"):
                if not rt.killing:
                    rt.killing = True
                    grace = min(md.get("deletionGracePeriodSeconds", 30), self.cfg.grace_period_cap)
                    self.pool.submit(self._kill_and_remove, pod, grace)
                continue
            if rt.killing or rt.done:
                continue
            try:
                self._sync_pod(pod, rt, by_id)
            except docker.errors.NotFound:
                pass  # removed under us (deletion racing the tick): next tick sorts it out

    def _sync_pod(self, pod: Obj, rt: PodRuntime, by_id: dict[str, Obj]) -> None:
        spec = pod["spec"]
        now = time.time()
        ctx = kl.PodContext(
            pod, self.cfg.node_name, rt.pod_ip, self.cfg.node_allocatable, self.cfg.pvcs,
            self.cfg.nfs_exports, rt.scratch,
        )  # fmt: skip
        volumes = None
        volume_block: kl.Blocked | None = None
        try:
            volumes = kl.resolve_volumes(ctx)
        except kl.Blocked as b:
            volume_block = b
        cli = self.client()
        for c in spec["containers"]:
            cname = c["name"]
            cid = rt.containers.get(cname)
            if cid is None and cname not in rt.terminated:
                if volume_block is not None:
                    rt.waiting[cname] = ("ContainerCreating", "")
                    continue
                self._start_container(ctx, c, rt, volumes or {}, now)
                continue
            if cid is None or cname in rt.terminated:
                continue
            info = by_id.get(cid)
            if info is None or info["State"] in ("running", "created", "restarting"):
                continue
            state = cli.api.inspect_container(cid)["State"]
            if state.get("Running"):
                continue
            code = state.get("ExitCode", 0)
            reason = "Completed" if code == 0 else "Error"
            if state.get("OOMKilled"):
                reason = "OOMKilled"
            term: Obj = {
                "exitCode": code,
                "reason": reason,
                "startedAt": rfc3339(parse_rfc3339(state["StartedAt"])),
                "finishedAt": rfc3339(parse_rfc3339(state["FinishedAt"])),
                "containerID": f"docker://{cid}",
            }
            if code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                logs = cli.api.logs(cid, stdout=True, stderr=True, tail=80).decode(errors="replace")
                if logs:
                    term["message"] = logs[-2048:]
            if code != 0 and spec.get("restartPolicy") == "OnFailure":
                # simplified: restart in place at once (no CrashLoopBackOff delay)
                rt.last_state[cname] = {"terminated": term}
                rt.restarts[cname] = rt.restarts.get(cname, 0) + 1
                cli.api.start(cid)
                rt.started_at[cname] = now_rfc3339()
            else:
                rt.terminated[cname] = term
        ads = spec.get("activeDeadlineSeconds")
        if ads is not None and now >= rt.admitted + ads:
            self._kill_all(rt, cli)
            self._write_status(
                pod,
                rt,
                final=(
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                ),
            )
            return
        self._write_status(pod, rt)

    def _image_ok(self, c: Obj, rt: PodRuntime, now: float) -> bool:
        cname, image = c["name"], c["image"]
        try:
            self.client().api.inspect_image(image)
            rt.pull_failed_at.pop(cname, None)
            return True
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError:
            pass
        if c.get("imagePullPolicy") == "Never":
            rt.waiting[cname] = (
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
            return False
        after = self.cfg.image_pull_backoff_after
        first, attempt = rt.pull_failed_at.get(cname, (now, 0))
        # ErrImagePull for `after` s after each failed pull, then ImagePullBackOff for a back-off
        # that doubles (as the kubelet's), then another "pull"
        backoff = after * (2**attempt)
        if now >= first + after + backoff:
            first, attempt = now, attempt + 1
        rt.pull_failed_at[cname] = (first, attempt)
        if now < first + after:
            rt.waiting[cname] = ("ErrImagePull", kl.pull_error(image))
        else:
            rt.waiting[cname] = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
        return False

    def _start_container(
        self, ctx: kl.PodContext, c: Obj, rt: PodRuntime, volumes: dict[str, Any], now: float
    ) -> None:
        cname = c["name"]
        if not self._image_ok(c, rt, now):
            return
        md = ctx.pod["metadata"]
        labels = {
            kl.LABEL: self.instance,
            f"{kl.LABEL}.pod": md["name"],
            f"{kl.LABEL}.pod-uid": md["uid"],
            f"{kl.LABEL}.namespace": md["namespace"],
            f"{kl.LABEL}.container": cname,
        }
        for ref in md.get("ownerReferences") or []:
            if ref.get("kind") == "Job":
                labels[f"{kl.LABEL}.job"] = ref["name"]
        try:
            kwargs = kl.create_kwargs(
                ctx, c, volumes, labels, f"k8s_{cname}_{md['name']}_{md['namespace']}_{md['uid']}_0"
            )
        except kl.Blocked as b:
            rt.waiting[cname] = (b.reason, b.message)
            return
        cli = self.client()
        try:
            container = cli.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            rt.waiting[cname] = ("CreateContainerError", str(exc.explanation or exc))
            return
        with self.lock:
            rt.containers[cname] = container.id
        rt.waiting.pop(cname, None)
        try:
            container.start()
            rt.started_at[cname] = now_rfc3339()
        except docker.errors.APIError as exc:
            rt.terminated[cname] = {
                "exitCode": 128,
                "reason": "StartError",
                "message": f"failed to create containerd task: {exc.explanation or exc}",
                "startedAt": "1970-01-01T00:00:00Z",
                "finishedAt": now_rfc3339(),
                "containerID": f"docker://{container.id}",
            }

    def _kill_all(self, rt: PodRuntime, cli: docker.DockerClient) -> None:
        for cname, cid in list(rt.containers.items()):
            if cname in rt.terminated:
                continue
            with contextlib.suppress(docker.errors.APIError):
                cli.api.kill(cid)
            self._record_exit(rt, cname, cid, cli, force_code=137)

    def _record_exit(
        self,
        rt: PodRuntime,
        cname: str,
        cid: str,
        cli: docker.DockerClient,
        force_code: int | None = None,
    ) -> None:
        try:
            state = cli.api.inspect_container(cid)["State"]
        except docker.errors.APIError:
            state = {}
        code = state.get("ExitCode", force_code or 137)
        if state.get("Running") and force_code is not None:
            code = force_code
        reason = "Completed" if code == 0 else ("OOMKilled" if state.get("OOMKilled") else "Error")
        started = state.get("StartedAt") or "1970-01-01T00:00:00Z"
        finished = state.get("FinishedAt") or ""
        if not finished or finished.startswith("0001"):
            finished = now_rfc3339()
        rt.terminated[cname] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": rfc3339(parse_rfc3339(started)),
            "finishedAt": rfc3339(parse_rfc3339(finished)),
            "containerID": f"docker://{cid}",
        }

    def _kill_and_remove(self, pod: Obj, grace: float) -> None:
        """The kubelet's side of a graceful deletion; then the pod object goes."""
        md = pod["metadata"]
        rt = self._runtime(pod)
        cli = self.client()
        try:
            for cname, cid in list(rt.containers.items()):
                if cname in rt.terminated:
                    continue
                try:
                    if grace > 0:
                        cli.api.kill(cid, signal="SIGTERM")
                        try:
                            cli.api.wait(cid, timeout=grace)
                        except Exception:
                            cli.api.kill(cid)
                    else:
                        cli.api.kill(cid)
                except docker.errors.APIError:
                    pass
                self._record_exit(rt, cname, cid, cli)
            if rt.containers:
                self._write_status(pod, rt, deleting=True)
            for cid in rt.containers.values():
                with contextlib.suppress(docker.errors.APIError):
                    cli.api.remove_container(cid, force=True, v=True)
            self.store.delete("pods", md["namespace"], md["name"], uid=md["uid"])
        finally:
            with self.lock:
                rt.killing = False
                rt.done = True

    def evict(self, namespace: str, name: str, message: str) -> None:
        """Kubelet node-pressure eviction: kill the pod's containers, phase Failed/Evicted."""
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise KeyError(f"pod {namespace}/{name} not found")
        rt = self._runtime(pod)
        cli = self.client()
        for cname, cid in list(rt.containers.items()):
            if cname in rt.terminated:
                continue
            with contextlib.suppress(docker.errors.APIError):
                cli.api.kill(cid)
            self._record_exit(rt, cname, cid, cli, force_code=137)
            rt.terminated[cname]["exitCode"] = 137
            rt.terminated[cname]["reason"] = "Error"
        for c in pod["spec"]["containers"]:
            if c["name"] not in rt.terminated:
                rt.terminated[c["name"]] = {
                    "exitCode": 137, "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                    "startedAt": None, "finishedAt": now_rfc3339(),
                }  # fmt: skip
        self._write_status(pod, rt, final=("Evicted", message))

    def _write_status(
        self, pod: Obj, rt: PodRuntime, final: tuple[str, str] | None = None, deleting: bool = False
    ) -> None:
        spec = pod["spec"]
        statuses = []
        waiting = running = terminated = succeeded = 0
        for c in spec["containers"]:
            cname = c["name"]
            cid = rt.containers.get(cname)
            cs: Obj = {
                "name": cname,
                "image": kl.normalize_image(c["image"]),
                "imageID": "",
                "ready": False,
                "restartCount": rt.restarts.get(cname, 0),
                "started": False,
                "lastState": rt.last_state.get(cname, {}),
            }
            if cid:
                cs["containerID"] = f"docker://{cid}"
                cs["imageID"] = self._image_id(c["image"])
            if cname in rt.terminated:
                cs["state"] = {"terminated": rt.terminated[cname]}
                terminated += 1
                succeeded += rt.terminated[cname]["exitCode"] == 0
            elif cid:
                cs["state"] = {"running": {"startedAt": rt.started_at.get(cname, now_rfc3339())}}
                cs["ready"] = cs["started"] = True
                running += 1
            else:
                reason, message = rt.waiting.get(cname, ("ContainerCreating", ""))
                cs["state"] = {
                    "waiting": {"reason": reason, **({"message": message} if message else {})}
                }
                waiting += 1
            statuses.append(cs)
        if final is not None:
            phase = "Failed"
        elif waiting:
            phase = "Pending"
        elif running:
            phase = "Running"
        elif spec.get("restartPolicy") == "Always":
            phase = "Running"
        else:
            phase = "Succeeded" if succeeded == len(spec["containers"]) else "Failed"
        if deleting and phase in ("Running", "Pending"):
            phase = "Failed"
        finished = phase in ("Succeeded", "Failed")
        if finished:
            rt.done = True
        names = [cs["name"] for cs in statuses if not cs["ready"]]

        def update(p: Obj) -> None:
            st = p["status"]
            old = copy.deepcopy(st)
            st["phase"] = phase
            st.setdefault("startTime", now_rfc3339())
            st["hostIP"] = "127.0.0.1"
            st["hostIPs"] = [{"ip": "127.0.0.1"}]
            if any(rt.containers.values()):
                st["podIP"] = rt.pod_ip
                st["podIPs"] = [{"ip": rt.pod_ip}]
            sandbox = "False" if finished else "True"
            if finished:
                why = "PodCompleted" if phase == "Succeeded" else "PodFailed"
                ready = [
                    pod_condition("Ready", "False", why, old=old),
                    pod_condition("ContainersReady", "False", why, old=old),
                ]
                init = pod_condition("Initialized", "True", "PodCompleted", old=old)
            elif names:
                msg = f"containers with unready status: [{' '.join(names)}]"
                ready = [
                    pod_condition("Ready", "False", "ContainersNotReady", msg, old=old),
                    pod_condition("ContainersReady", "False", "ContainersNotReady", msg, old=old),
                ]
                init = pod_condition("Initialized", "True", old=old)
            else:
                ready = [
                    pod_condition("Ready", "True", old=old),
                    pod_condition("ContainersReady", "True", old=old),
                ]
                init = pod_condition("Initialized", "True", old=old)
            conds = [pod_condition("PodReadyToStartContainers", sandbox, old=old), init, *ready]
            sched = [
                c
                for c in old.get("conditions") or []
                if c["type"] in ("PodScheduled", "DisruptionTarget")
            ]
            if final is not None and final[0] == "Evicted":
                sched.append(
                    pod_condition(
                        "DisruptionTarget", "True", "TerminationByKubelet", final[1], old=old
                    )
                )
            st["conditions"] = conds + sched
            st["containerStatuses"] = statuses
            if final is not None:
                st["reason"], st["message"] = final

        self.store.update("pods", rt.namespace, rt.name, update)

    def _image_id(self, image: str) -> str:
        try:
            info = self.client().api.inspect_image(image)
        except docker.errors.APIError:
            return ""
        digests = info.get("RepoDigests") or []
        return digests[0] if digests else info["Id"]

    # ------------------------------------------------------------------ logs

    def container_id(self, pod: Obj, container: str) -> str | None:
        with self.lock:
            rt = self.pods.get(pod["metadata"]["uid"])
            return rt.containers.get(container) if rt else None

    def restarts(self, pod: Obj, container: str) -> int:
        with self.lock:
            rt = self.pods.get(pod["metadata"]["uid"])
            return rt.restarts.get(container, 0) if rt else 0

    def on_stopped(self) -> Callable[[], bool]:
        return self.stop_event.is_set
