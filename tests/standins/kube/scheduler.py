"""The stand-in's scheduler: one node, with its labels, taints and allocatable resources."""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

from .node import pod_condition
from .store import Obj, Store


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


class Scheduler:
    """Binds pending pods to the one node, or marks them Unschedulable as kube-scheduler does."""

    store: Store
    cfg: Any

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
                return (
                    f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found. '
                    + helpless
                )
        for taint in cfg.node_taints:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(self._tolerates(t, taint) for t in spec.get("tolerations") or []):
                return (
                    "0/1 nodes are available: 1 node(s) had untolerated taint "
                    f"{{{taint['key']}: {taint.get('value', '')}}}. {helpless}"
                )
        if not self._affinity_ok(spec):
            return (
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
                + helpless
            )
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
                f"0/1 nodes are available: {', '.join(short)}. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod."
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
            p
            for p in pods
            if p["spec"].get("nodeName") and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
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
