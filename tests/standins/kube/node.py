"""The stand-in's kubelet loop: runs each pod bound to the node as real Docker containers and
reports their state in the pod's status, as the kubelet does."""

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

from . import kubelet as kl
from .store import Obj, Store, now_rfc3339, parse_rfc3339, rfc3339


def pod_condition(
    ctype: str, status: str, reason: str = "", message: str = "", old: Obj | None = None
) -> Obj:
    """A pod condition; lastTransitionTime kept from ``old`` status when the status is unchanged."""
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


class Node:
    """The kubelet half of the Controller (a mixin: the Controller provides the attributes)."""

    store: Store
    cfg: Any
    instance: str
    pods: dict[str, PodRuntime]
    lock: threading.RLock
    pool: ThreadPoolExecutor
    scratch: Path
    _ip: int

    def client(self) -> docker.DockerClient:
        raise NotImplementedError

    def delete_pod(
        self, namespace: str, name: str, grace: int | None, uid: str | None = None
    ) -> tuple[Obj, bool] | None:
        raise NotImplementedError

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
            # NotFound: removed under us (a deletion racing the tick); the next tick sorts it out
            with contextlib.suppress(docker.errors.NotFound):
                self._sync_pod(pod, rt, by_id)

    def _sync_pod(self, pod: Obj, rt: PodRuntime, by_id: dict[str, Obj]) -> None:
        spec = pod["spec"]
        now = time.time()
        ctx = kl.PodContext(
            pod,
            self.cfg.node_name,
            rt.pod_ip,
            self.cfg.node_allocatable,
            self.cfg.pvcs,
            self.cfg.nfs_exports,
            rt.scratch,
        )
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
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                    "startedAt": None,
                    "finishedAt": now_rfc3339(),
                }
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
        elif running or spec.get("restartPolicy") == "Always":
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
        cache: dict[str, str] = self.__dict__.setdefault("_image_ids", {})
        if image in cache:
            return cache[image]
        try:
            info = self.client().api.inspect_image(image)
        except docker.errors.APIError:
            return ""
        digests = info.get("RepoDigests") or []
        cache[image] = digests[0] if digests else info["Id"]
        return cache[image]

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
