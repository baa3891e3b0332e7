"""The stand-in's kubelet half: turning a Pod spec into a real Docker container."""

from __future__ import annotations

import math
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from .expansion import expand, mapping_for

Obj = dict[str, Any]

LABEL = "io.pman.k8s-standin"
# what the kubelet injects for the default "kubernetes" Service (enableServiceLinks)
SERVICE_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


class Blocked(Exception):
    """The container cannot be created yet: it stays waiting with this reason and message."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def normalize_image(image: str) -> str:
    """The image reference as containerd reports it (``docker.io/library/x:latest``)."""
    name, digest = ([*image.split("@", 1), ""])[:2]
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if digest:
        return f"{name}@{digest}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def pull_error(image: str) -> str:
    ref = normalize_image(image)
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": '
        f'failed to resolve reference "{ref}": {ref}: not found'
    )


def cpu_nanos(value: str) -> int:
    return int(parse_quantity(value) * 10**9)


def quantity_int(value: str) -> int:
    return math.ceil(parse_quantity(value))


@dataclass
class PodContext:
    """What the kubelet knows while building a pod's containers."""

    pod: Obj
    node_name: str
    pod_ip: str
    node_allocatable: dict[str, str]
    pvcs: dict[str, Path]
    nfs_exports: dict[str, Path]
    scratch: Path  # this pod's folder for emptyDir volumes
    tmpfs: dict[str, dict[str, str]] = field(default_factory=dict)  # volume -> tmpfs options


def resolve_volumes(ctx: PodContext) -> dict[str, tuple[str, bool] | None]:
    """volume name -> (host path, read-only) or None for memory-backed emptyDir.

    Raises Blocked("ContainerCreating") where the real kubelet would fail to mount and retry.
    """
    out: dict[str, tuple[str, bool] | None] = {}
    for vol in ctx.pod["spec"].get("volumes") or []:
        name = vol["name"]
        if "emptyDir" in vol:
            ed = vol["emptyDir"]
            if ed.get("medium") == "Memory":
                opts = {"mode": "1777"}
                if ed.get("sizeLimit"):
                    opts["size"] = str(quantity_int(ed["sizeLimit"]))
                ctx.tmpfs[name] = opts
                out[name] = None
            else:
                path = ctx.scratch / name
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)
                out[name] = (str(path), False)
        elif "hostPath" in vol:
            hp = vol["hostPath"]
            path = Path(hp["path"])
            kind = hp.get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch(exist_ok=True)
            elif (
                (kind == "Directory" and not path.is_dir())
                or (kind == "File" and not path.is_file())
                or (
                    kind == "Socket" and not (path.exists() and stat.S_ISSOCK(path.lstat().st_mode))
                )
            ):
                raise Blocked("ContainerCreating")
            out[name] = (str(path), False)
        elif "persistentVolumeClaim" in vol:
            pvc = vol["persistentVolumeClaim"]
            host = ctx.pvcs.get(pvc["claimName"])
            if host is None:
                raise Blocked("ContainerCreating")
            out[name] = (str(host), bool(pvc.get("readOnly")))
        elif "nfs" in vol:
            nfs = vol["nfs"]
            root = ctx.nfs_exports.get(nfs["server"])
            if root is None:
                raise Blocked("ContainerCreating")
            host = root / nfs["path"].lstrip("/")
            if not host.is_dir():
                raise Blocked("ContainerCreating")
            out[name] = (str(host), bool(nfs.get("readOnly")))
        else:  # secret, configMap, projected...: the stand-in has none of these objects
            raise Blocked("ContainerCreating")
    return out


def _field_ref(ctx: PodContext, path: str) -> str:
    md = ctx.pod["metadata"]
    if path.startswith(("metadata.labels[", "metadata.annotations[")):
        which = "labels" if path.startswith("metadata.labels") else "annotations"
        key = path.split("[", 1)[1].rstrip("]").strip("'\"")
        return (md.get(which) or {}).get(key, "")
    simple = {
        "metadata.name": md["name"],
        "metadata.namespace": md["namespace"],
        "metadata.uid": md["uid"],
        "metadata.labels": "\n".join(
            f'{k}="{v}"' for k, v in sorted((md.get("labels") or {}).items())
        ),
        "metadata.annotations": "\n".join(
            f'{k}="{v}"' for k, v in sorted((md.get("annotations") or {}).items())
        ),
        "spec.nodeName": ctx.node_name,
        "spec.serviceAccountName": ctx.pod["spec"].get("serviceAccountName", "default"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
    }
    return simple.get(path, "")


def _resource_ref(ctx: PodContext, container: Obj, ref: Obj) -> str:
    which, _, res = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(which) or {}).get(res)
    if value is None:
        value = (resources.get("limits") or {}).get(res) if which == "requests" else None
    if value is None:
        value = ctx.node_allocatable.get(res, "0") if which == "limits" else "0"
    divisor = ref.get("divisor") or "0"
    div = parse_quantity(divisor)
    if div == 0:
        div = parse_quantity("1")
    return str(math.ceil(parse_quantity(value) / div))


def container_env(ctx: PodContext, container: Obj) -> list[tuple[str, str]]:
    """The env the kubelet gives the container, in order, with $(VAR) expansion applied.

    Raises Blocked("CreateContainerConfigError") for references to Secrets or ConfigMaps,
    which the stand-in does not have.
    """
    env: dict[str, str] = {}
    service = SERVICE_ENV if ctx.pod["spec"].get("enableServiceLinks", True) else {}
    for src in container.get("envFrom") or []:
        for kind, label in (("secretRef", "secret"), ("configMapRef", "configmap")):
            if kind in src and not src[kind].get("optional"):
                raise Blocked(
                    "CreateContainerConfigError", f'{label} "{src[kind]["name"]}" not found'
                )
    for var in container.get("env") or []:
        name = var["name"]
        vf = var.get("valueFrom")
        if vf is None:
            env[name] = expand(var.get("value", ""), mapping_for(env, service))
        elif "fieldRef" in vf:
            env[name] = _field_ref(ctx, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            env[name] = _resource_ref(ctx, container, vf["resourceFieldRef"])
        else:
            for kind, label in (("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")):
                if kind in vf:
                    if vf[kind].get("optional"):
                        break
                    raise Blocked(
                        "CreateContainerConfigError", f'{label} "{vf[kind]["name"]}" not found'
                    )
    merged = dict(service)
    merged.update(env)
    return list(merged.items())


def user_and_groups(pod: Obj, container: Obj) -> tuple[str | None, list[str]]:
    psc = pod["spec"].get("securityContext") or {}
    csc = container.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if non_root and not uid:
        if uid == 0:
            raise Blocked(
                "CreateContainerConfigError",
                "container's runAsUser breaks non-root policy "
                f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}'
                f'({pod["metadata"]["uid"]})", container: {container["name"]})',
            )
        raise Blocked(
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root "
            f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}'
            f'({pod["metadata"]["uid"]})", container: {container["name"]})',
        )
    user = None
    if uid is not None or gid is not None:
        user = f"{uid if uid is not None else 0}" + (f":{gid}" if gid is not None else "")
    groups = [str(g) for g in psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        groups.append(str(psc["fsGroup"]))
    return user, groups


def make_subpath(base: str, sub: str) -> str:
    """The kubelet creates a missing subPath folder, with the volume root's permissions."""
    target = Path(base) / sub
    if not target.exists():
        mode = stat.S_IMODE(os.stat(base).st_mode)
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(mode)
    return str(target)


def create_kwargs(
    ctx: PodContext,
    container: Obj,
    volumes: dict[str, tuple[str, bool] | None],
    labels: dict[str, str],
    name: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Arguments for docker's ``containers.create`` for one Kubernetes container."""
    env = container_env(ctx, container)
    if extra_env:
        env = [(k, v) for k, v in env if k not in extra_env] + list(extra_env.items())
    env_map = dict(env)
    mapping = mapping_for(env_map)
    command = [expand(a, mapping) for a in container["command"]] if "command" in container else None
    args = [expand(a, mapping) for a in container["args"]] if "args" in container else None
    user, groups = user_and_groups(ctx.pod, container)
    binds: list[str] = []
    tmpfs: dict[str, str] = {}
    for vm in container.get("volumeMounts") or []:
        src = volumes.get(vm["name"])
        ro = bool(vm.get("readOnly"))
        sub = vm.get("subPath") or (
            expand(vm["subPathExpr"], mapping) if vm.get("subPathExpr") else ""
        )
        if src is None:
            opts = ctx.tmpfs[vm["name"]]
            tmpfs[vm["mountPath"]] = ",".join(
                [f"{k}={v}" for k, v in opts.items()] + (["ro"] if ro else [])
            )
            continue
        host, vol_ro = src
        if sub:
            host = make_subpath(host, sub)
        binds.append(f"{host}:{vm['mountPath']}:{'ro' if ro or vol_ro else 'rw'}")
    limits = (container.get("resources") or {}).get("limits") or {}
    requests = (container.get("resources") or {}).get("requests") or {}
    csc = container.get("securityContext") or {}
    kwargs: dict[str, Any] = {
        "image": container["image"],
        "name": name,
        "detach": True,
        "labels": labels,
        "environment": [f"{k}={v}" for k, v in env],
        "hostname": (ctx.pod["spec"].get("hostname") or ctx.pod["metadata"]["name"])[:63],
        "network_mode": "none",
        "volumes": binds,
        "tmpfs": tmpfs or None,
        "working_dir": container.get("workingDir") or None,
        "user": user,
        "group_add": groups or None,
        "privileged": bool(csc.get("privileged")),
        "read_only": bool(csc.get("readOnlyRootFilesystem")),
        "cap_add": list((csc.get("capabilities") or {}).get("add") or []) or None,
        "cap_drop": list((csc.get("capabilities") or {}).get("drop") or []) or None,
        "security_opt": ["no-new-privileges"]
        if csc.get("allowPrivilegeEscalation") is False
        else None,
    }
    if command is not None:
        kwargs["entrypoint"] = command
        kwargs["command"] = args or []
    elif args is not None:
        kwargs["command"] = args
    if "cpu" in limits:
        kwargs["nano_cpus"] = cpu_nanos(limits["cpu"])
    cpu_req = requests.get("cpu", limits.get("cpu"))
    if cpu_req is not None:
        kwargs["cpu_shares"] = max(2, int(parse_quantity(cpu_req) * 1024))
    if "memory" in limits:
        mem = quantity_int(limits["memory"])
        kwargs["mem_limit"] = mem
        kwargs["memswap_limit"] = mem
    return {k: v for k, v in kwargs.items() if v is not None}


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
