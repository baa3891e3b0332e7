"""TEMPORARY (issue 14): the old flat attribute names of Settings, for the backends.

Until each engine reads its own section (pman/backends/<engine>/config.py
``from_settings``), ``settings.slurm_partition`` and the like still work:
each old name below resolves to its place in the sections. Everything outside
pman/backends uses the sections themselves; every use of an old name is
counted (``uses``) and warned about (FlatSettingWarning), so a test can tell
that nothing else does. Remove this module, and Settings.__getattr__, when the
backend packages are merged.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from typing import Any

#: old flat name -> its path from Settings
FLAT_NAMES: dict[str, str] = {
    # core
    "application_mode": "core.application_mode",
    "data_dir": "core.data_dir",
    "engine_timeout": "core.engine_timeout",
    "log_format": "core.log_format",
    "access_log": "core.access_log",
    "tracker_enabled": "core.tracker_enabled",
    "tracker_interval": "core.tracker_interval",
    "logs_refresh_seconds": "core.logs_refresh_seconds",
    # server
    "quick_threads": "server.quick_threads",
    "max_engine_calls": "server.max_engine_calls",
    "max_log_streams": "server.max_log_streams",
    "max_log_streams_per_client": "server.max_log_streams_per_client",
    "log_stream_idle_timeout": "server.log_stream_idle_timeout",
    "body_timeout": "server.body_timeout",
    "max_request_bytes": "server.max_request_bytes",
    # registry
    "database_url": "registry.database_url",
    "instance": "registry.instance",
    # auth
    "auth_mode": "auth.mode",
    "auth_tokens": "auth.all_tokens",
    "auth_user": "auth.user",
    "auth_password": "auth.password",
    "auth_token_lifetime": "auth.token_lifetime",
    "secret_key": "auth.secret_key",
    # webhooks
    "webhook_url": "webhooks.url",
    "webhook_format": "webhooks.format",
    "webhook_secret": "webhooks.secret",
    "webhook_allowed_hosts": "webhooks.allowed_hosts",
    "webhook_max_attempts": "webhooks.max_attempts",
    "webhook_backoff_base": "webhooks.backoff_base",
    "webhook_backoff_cap": "webhooks.backoff_cap",
    "webhook_timeout": "webhooks.timeout",
    # the resource
    "container_env": "resource.container_env",
    "storage_type": "resource.storage.storage_type",
    "storebase": "resource.storage.storebase",
    "nfs_server": "resource.storage.nfs_server",
    "volume_name": "resource.storage.volume_name",
    "pfcon_selector": "resource.storage.pfcon_selector",
    "job_logs_tail": "resource.jobs.logs_tail",
    "job_labels": "resource.jobs.labels",
    "ignore_limits": "resource.jobs.ignore_limits",
    "container_user": "resource.jobs.container_user",
    "enable_home_workaround": "resource.jobs.enable_home_workaround",
    "shm_size": "resource.jobs.shm_size",
    "remove_jobs": "resource.jobs.remove_jobs",
    "timelimit_minutes": "resource.jobs.timelimit_minutes",
    "max_running": "resource.jobs.max_running",
    "cap_add": "resource.jobs.cap_add",
    "read_only_rootfs": "resource.jobs.read_only_rootfs",
    "limits": "resource.limits",
    # engines: the chosen engine's section
    "docker_host": "resource.engine.host",
    "docker_tls_verify": "resource.engine.tls_verify",
    "docker_cert_path": "resource.engine.cert_path",
    "docker_api_version": "resource.engine.api_version",
    "docker_environment": "resource.engine.environment",
    "swarm_pending_timeout": "resource.engine.pending_timeout",
    "kubeconfig": "resource.engine.kubeconfig",
    "kubernetes_in_cluster": "resource.engine.in_cluster",
    "job_namespace": "resource.engine.namespace",
    "node_selector": "resource.engine.node_selector",
    "tolerations": "resource.engine.tolerations",
    "image_pull_secrets": "resource.engine.image_pull_secrets",
    "kubernetes_gpu_resource": "resource.engine.gpu_resource",
    "securitycontext_run_as_user": "resource.engine.run_as_user",
    "securitycontext_run_as_group": "resource.engine.run_as_group",
    "job_ttl_seconds": "resource.engine.job_ttl_seconds",
    "kubernetes_pending_timeout": "resource.engine.pending_timeout",
    "cromwell_url": "resource.engine.url",
    "slurm_job_dir": "resource.engine.job_dir",
    "slurm_container_runtime": "resource.engine.container_runtime",
    "slurm_partition": "resource.engine.partition",
    "slurm_account": "resource.engine.account",
    "slurm_qos": "resource.engine.qos",
    "slurm_extra_options": "resource.engine.extra_options",
    "slurm_bin_dir": "resource.engine.bin_dir",
    "slurm_conf": "resource.engine.conf",
    "local_user": "resource.engine.user",
    "local_read_only_paths": "resource.engine.read_only_paths",
}

#: (calling module, old name) -> how often it was read through the bridge
uses: Counter[tuple[str, str]] = Counter()


class FlatSettingWarning(DeprecationWarning):
    """An old flat settings attribute was read (pman.settings.bridge)."""


def resolve(settings: Any, name: str) -> Any:
    """The value the old flat attribute ``name`` now has; AttributeError for
    any other name."""
    try:
        path = FLAT_NAMES[name]
    except KeyError:
        raise AttributeError(f"{type(settings).__name__!r} has no attribute {name!r}") from None
    caller = sys._getframe(2).f_globals.get("__name__", "?")
    uses[(caller, name)] += 1
    warnings.warn(
        f"settings.{name} is settings.{path} (the flat names are a temporary bridge "
        "for the backends, pman.settings.bridge)",
        FlatSettingWarning,
        stacklevel=3,
    )
    value = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def outside_backends() -> dict[tuple[str, str], int]:
    """The uses by modules other than pman.backends.* (those should use the sections)."""
    return {
        (module, name): n
        for (module, name), n in uses.items()
        if not module.startswith("pman.backends")
    }
