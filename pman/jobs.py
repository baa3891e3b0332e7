"""Turning a validated v1 request into an engine-neutral JobSpec."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pman.labels import (
    LABEL_AUID,
    LABEL_FINGERPRINT,
    LABEL_IMAGE,
    LABEL_INSTANCE,
    LABEL_JID,
    LABEL_MANAGED,
    LABEL_RESOURCE,
    LABEL_TYPE,
)
from pman.models import INCOMING, OUTGOING, JobRequest, JobSpec, PluginType, Resources
from pman.settings import Settings
from pman.storage import Storage


def localize_path_args(args: Sequence[str], path_flags: Collection[str]) -> list[str]:
    """Replace the argument following each path flag with the container's input folder.

    See the ChRIS plugin spec: a flag such as ``--mask`` names a path in the
    input folder, which the job sees at /share/incoming.
    """
    out: list[str] = []
    replace_next = False
    for arg in args:
        if replace_next:
            out.append(INCOMING)
            replace_next = False
        else:
            out.append(arg)
            replace_next = arg in path_flags
    return out


def build_command(
    entrypoint: Sequence[str],
    args: Sequence[str],
    path_flags: Collection[str],
    plugin_type: PluginType,
) -> list[str]:
    """entrypoint + args (path flags localized) + [incoming if ds] + [outgoing]."""
    cmd = [*entrypoint, *localize_path_args(args, path_flags)]
    if plugin_type == "ds":
        cmd.append(INCOMING)
    cmd.append(OUTGOING)
    return cmd


def build_spec(
    request: JobRequest, settings: Settings, storage: Storage, image: str | None = None
) -> JobSpec:
    """The job to run for ``request`` under ``settings``; raises InvalidJobSpec.

    ``image`` is the reference to run when it differs from the request's (fully
    qualified under PMAN_IMAGE_ALLOWLIST, see pman.limits)."""
    image = image or request.image
    mounts = storage.resolve(request.input_dir, request.output_dir)
    env = list(request.env)
    if settings.resource.jobs.enable_home_workaround:
        env.append("HOME=/tmp")
    user = settings.resource.jobs.container_user
    fingerprint = request.fingerprint()
    labels = {
        **settings.resource.jobs.labels,
        LABEL_MANAGED: "true",
        LABEL_JID: request.jid,
        LABEL_FINGERPRINT: fingerprint,
        LABEL_AUID: request.auid,
        LABEL_TYPE: request.type,
        LABEL_IMAGE: image,
        LABEL_INSTANCE: settings.registry.instance,
    }
    return JobSpec(
        name=request.jid,
        image=image,
        command=build_command(
            request.entrypoint, request.args, request.args_path_flags, request.type
        ),
        env=env,
        resources=Resources(
            number_of_workers=request.number_of_workers,
            cpu_limit=request.cpu_limit,
            memory_limit=request.memory_limit,
            gpu_limit=request.gpu_limit,
        ),
        mounts=mounts,
        plugin_type=request.type,
        auid=request.auid,
        fingerprint=fingerprint,
        uid=user.uid.pick() if user.uid else None,
        gid=user.gid.pick() if user.gid else None,
        labels=labels,
        callback_url=request.callback_url,
    )


def labelled_for(spec: JobSpec, resource: str) -> JobSpec:
    """``spec`` as it goes to the engine of ``resource``: labelled with it
    (LABEL_RESOURCE), so that adoption after a restart finds its resource. The
    registry keeps the request's labels without it: the job's resource is a
    column of its own there."""
    return replace(spec, labels={**spec.labels, LABEL_RESOURCE: resource})


def spec_from_record(
    data: Mapping[str, Any], labels: dict[str, str], fingerprint: str, storage: Storage
) -> JobSpec:
    """The JobSpec of a job waiting in pman's queue, from what the registry keeps
    of it (pman.registry.writes.spec_json). Its folders are resolved and confined again:
    STOREBASE may have changed while it waited. Raises InvalidJobSpec."""
    mounts = storage.resolve(data["mounts"]["input_dir"], data["mounts"]["output_dir"])
    return JobSpec(
        name=data["name"],
        image=data["image"],
        command=list(data["command"]),
        env=list(data["env"]),
        resources=Resources(**data["resources"]),
        mounts=mounts,
        plugin_type=data["plugin_type"],
        auid=data["auid"],
        fingerprint=fingerprint,
        uid=data.get("uid"),
        gid=data.get("gid"),
        labels=labels,
    )
