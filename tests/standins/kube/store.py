"""The stand-in's object store: resourceVersions, watch events, label and field selectors."""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace, name): resource is "jobs" or "pods"

MAX_EVENTS = 20000


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it: RFC 3339, seconds, ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    text = text.replace("Z", "+00:00")
    if "." in text:  # Docker writes nanoseconds: Python takes microseconds at most
        head, _, rest = text.partition(".")
        frac = re.match(r"\d*", rest).group(0)  # type: ignore[union-attr]
        text = f"{head}.{frac[:6]}{rest[len(frac) :]}"
    return datetime.fromisoformat(text).timestamp()


def new_uid() -> str:
    return str(uuid.uuid4())


class SelectorError(ValueError):
    """An unparsable label or field selector (answered with 400 BadRequest)."""


_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=|\s+in\s+|\s+notin\s+)\s*(?P<val>.*?))?\s*$"
)


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def parse_label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A predicate over a labels dict for a label selector string (``k=v,k!=v,k,!k,k in (a,b)``)."""
    reqs: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(text or ""):
        m = _REQ.match(part)
        if not m:
            raise SelectorError(f"unable to parse requirement: {part!r}")
        key, op, val, neg = m["key"], (m["op"] or "").strip(), m["val"], bool(m["neg"])
        if neg:
            if op:
                raise SelectorError(f"unable to parse requirement: {part!r}")
            reqs.append(lambda lb, k=key: k not in lb)
        elif not op:
            reqs.append(lambda lb, k=key: k in lb)
        elif op in ("=", "=="):
            reqs.append(lambda lb, k=key, v=val: lb.get(k) == v)
        elif op == "!=":
            reqs.append(lambda lb, k=key, v=val: lb.get(k) != v)
        else:
            if not (val.startswith("(") and val.endswith(")")):
                raise SelectorError(f"unable to parse requirement: {part!r}")
            values = {v.strip() for v in val[1:-1].split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                reqs.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
    return lambda labels: all(r(labels) for r in reqs)


FIELD_GETTERS: dict[str, dict[str, Callable[[Obj], str]]] = {
    "jobs": {
        "metadata.name": lambda o: o["metadata"]["name"],
        "metadata.namespace": lambda o: o["metadata"]["namespace"],
        "status.successful": lambda o: str(o.get("status", {}).get("succeeded", 0)),
    },
    "pods": {
        "metadata.name": lambda o: o["metadata"]["name"],
        "metadata.namespace": lambda o: o["metadata"]["namespace"],
        "spec.nodeName": lambda o: o["spec"].get("nodeName", ""),
        "spec.restartPolicy": lambda o: o["spec"].get("restartPolicy", ""),
        "spec.schedulerName": lambda o: o["spec"].get("schedulerName", ""),
        "spec.serviceAccountName": lambda o: o["spec"].get("serviceAccountName", ""),
        "status.phase": lambda o: o.get("status", {}).get("phase", ""),
        "status.podIP": lambda o: o.get("status", {}).get("podIP", ""),
        "status.nominatedNodeName": lambda o: "",
    },
}


def parse_field_selector(resource: str, text: str) -> Callable[[Obj], bool]:
    """A predicate over an object for a field selector (``metadata.name=x,status.phase!=X``)."""
    reqs: list[Callable[[Obj], bool]] = []
    getters = FIELD_GETTERS[resource]
    for part in _split_top(text or ""):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        fname, op, val = m.groups()
        if fname not in getters:
            raise SelectorError(f'field label not supported: "{fname}"')
        get = getters[fname]
        if op == "!=":
            reqs.append(lambda o, g=get, v=val: g(o) != v)
        else:
            reqs.append(lambda o, g=get, v=val: g(o) == v)
    return lambda obj: all(r(obj) for r in reqs)


@dataclass
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: str
    namespace: str
    old: Obj | None
    new: Obj


@dataclass
class Store:
    """Objects keyed by (resource, namespace, name), with a global resourceVersion counter.

    Every read hands out deep copies; every write takes a copy.  ``cond`` (an RLock underneath)
    guards everything and is notified on each change, which is what watches wait on.
    """

    cond: threading.Condition = field(
        default_factory=lambda: threading.Condition(threading.RLock())
    )
    objects: dict[Key, Obj] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    rv: int = 1000
    first_rv: int = 1000  # the oldest rv whose events are still held

    def current_rv(self) -> str:
        with self.cond:
            return str(self.rv)

    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def _record(self, etype: str, key: Key, old: Obj | None, new: Obj) -> None:
        self.events.append(Event(self.rv, etype, key[0], key[1], old, new))
        if len(self.events) > MAX_EVENTS:
            drop = len(self.events) - MAX_EVENTS
            self.first_rv = self.events[drop - 1].rv
            del self.events[:drop]
        self.cond.notify_all()

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        with self.cond:
            obj = self.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        with self.cond:
            out = [
                copy.deepcopy(o)
                for (r, ns, _), o in self.objects.items()
                if r == resource and (namespace is None or ns == namespace)
            ]
        out.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
        return out

    def create(self, resource: str, obj: Obj) -> Obj:
        """Store a new object: fills uid, resourceVersion, creationTimestamp, generation."""
        with self.cond:
            md = obj["metadata"]
            key = (resource, md["namespace"], md["name"])
            if key in self.objects:
                raise KeyError(key)
            md.setdefault("uid", new_uid())
            md["creationTimestamp"] = now_rfc3339()
            md["resourceVersion"] = str(self._bump())
            if resource == "jobs":
                md["generation"] = 1
            self.objects[key] = copy.deepcopy(obj)
            self._record("ADDED", key, None, copy.deepcopy(obj))
            return copy.deepcopy(obj)

    def update(
        self, resource: str, namespace: str, name: str, fn: Callable[[Obj], Any]
    ) -> Obj | None:
        """Apply ``fn`` to a copy of the object; store it (new resourceVersion) if it changed."""
        with self.cond:
            key = (resource, namespace, name)
            cur = self.objects.get(key)
            if cur is None:
                return None
            new = copy.deepcopy(cur)
            fn(new)
            if new == cur:
                return copy.deepcopy(cur)
            new["metadata"]["resourceVersion"] = str(self._bump())
            self.objects[key] = new
            self._record("MODIFIED", key, copy.deepcopy(cur), copy.deepcopy(new))
            return copy.deepcopy(new)

    def delete(
        self, resource: str, namespace: str, name: str, uid: str | None = None
    ) -> Obj | None:
        """Remove the object (only if its uid is ``uid`` when given); returns it, or None."""
        with self.cond:
            key = (resource, namespace, name)
            cur = self.objects.get(key)
            if cur is None or (uid is not None and cur["metadata"]["uid"] != uid):
                return None
            del self.objects[key]
            gone = copy.deepcopy(cur)
            gone["metadata"]["resourceVersion"] = str(self._bump())
            self._record("DELETED", key, copy.deepcopy(cur), gone)
            return copy.deepcopy(gone)

    def watch(
        self,
        resource: str,
        namespace: str | None,
        matches: Callable[[Obj], bool],
        since_rv: int | None,
        deadline: float,
        stopped: Callable[[], bool],
    ) -> Iterator[tuple[str, Obj]]:
        """Yield (type, object) events; ADDED for every current object first unless ``since_rv``.

        An object that stops matching the selectors is announced DELETED, one that starts
        matching ADDED, as the API server's watch cache does.  Yields ("ERROR", Status) when
        ``since_rv`` is older than the events held (410 Expired).
        """
        with self.cond:
            if since_rv is None:
                start = self.rv
                initial = [
                    copy.deepcopy(o)
                    for (r, ns, _), o in sorted(self.objects.items())
                    if r == resource and (namespace is None or ns == namespace) and matches(o)
                ]
            else:
                if since_rv < self.first_rv:
                    initial = []
                    start = -1
                else:
                    initial, start = [], since_rv
        if start < 0:
            yield (
                "ERROR",
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {since_rv} ({self.first_rv})",
                    "reason": "Expired",
                    "code": 410,
                },
            )
            return
        for obj in initial:
            yield "ADDED", obj
        last = start
        while not stopped():
            batch: list[tuple[str, Obj]] = []
            with self.cond:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not self.events or self.events[-1].rv <= last:
                    self.cond.wait(min(remaining, 0.5))
                for ev in self.events:
                    if ev.rv <= last:
                        continue
                    last = ev.rv
                    if ev.resource != resource or (
                        namespace is not None and ev.namespace != namespace
                    ):
                        continue
                    was = ev.old is not None and matches(ev.old)
                    now = matches(ev.new)
                    if ev.type == "DELETED":
                        if was:
                            batch.append(("DELETED", copy.deepcopy(ev.new)))
                    elif ev.type == "ADDED":
                        if now:
                            batch.append(("ADDED", copy.deepcopy(ev.new)))
                    elif was and now:
                        batch.append(("MODIFIED", copy.deepcopy(ev.new)))
                    elif now:
                        batch.append(("ADDED", copy.deepcopy(ev.new)))
                    elif was:
                        batch.append(("DELETED", copy.deepcopy(ev.new)))
            yield from batch
