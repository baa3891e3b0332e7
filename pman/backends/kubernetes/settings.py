"""The kubernetes engine's settings: the cluster, the namespace, how pods are placed."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from pman.backends.kubernetes.manifest import is_label_key, is_label_value
from pman.settings.declare import EngineSettings, Env, Environ, Problems
from pman.settings.jobs import parse_labels

if TYPE_CHECKING:
    from pman.settings.jobs import JobSettings
    from pman.settings.storage import StorageSettings

_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def parse_tolerations(text: str) -> tuple[dict[str, Any], ...]:
    """TOLERATIONS: a JSON list of Kubernetes Toleration objects, e.g.
    ``[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]``."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg}): give a JSON list of tolerations") from e
    if not isinstance(items, list):
        raise ValueError("give a JSON list of tolerations")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} is not an object")
        unknown = set(item) - _TOLERATION_KEYS
        if unknown:
            raise ValueError(f"item {i}: unknown field(s) {', '.join(sorted(unknown))}")
        if item.get("operator", "Equal") not in _TOLERATION_OPERATORS:
            choices = ", ".join(_TOLERATION_OPERATORS)
            raise ValueError(f"item {i}: operator must be one of {choices}")
        if "effect" in item and item["effect"] not in _TOLERATION_EFFECTS:
            raise ValueError(f"item {i}: effect must be one of {', '.join(_TOLERATION_EFFECTS)}")
        if item.get("operator") == "Exists" and item.get("value"):
            raise ValueError(f"item {i}: operator Exists takes no value")
        if not item.get("key") and item.get("operator") != "Exists":
            raise ValueError(f"item {i}: a toleration without a key needs operator Exists")
        seconds = item.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            raise ValueError(f"item {i}: tolerationSeconds must be an integer")
        for field_name in ("key", "value"):
            if field_name in item and not isinstance(item[field_name], str):
                raise ValueError(f"item {i}: {field_name} must be a string")
    return tuple(items)


class KubernetesSettings(EngineSettings):
    """A Kubernetes cluster: one batch/v1 Job per job."""

    title = "kubernetes"
    volumes = ("kubernetes_pvc",)

    kubeconfig: Annotated[
        str | None,
        Env(
            "KUBECONFIG",
            "the kubeconfig file to use",
            default_doc="in a pod: its ServiceAccount; else `~/.kube/config`",
        ),
    ] = None
    in_cluster: Annotated[
        bool,
        Env(
            "KUBERNETES_SERVICE_HOST",
            "set by Kubernetes in every pod: pman then runs inside the cluster and, without "
            "`KUBECONFIG`, uses its pod's ServiceAccount",
            parse=bool,
            form="any text",
            default_doc="unset",
        ),
    ] = False
    namespace: Annotated[str, Env("JOB_NAMESPACE", "the namespace of the jobs")] = "default"
    node_selector: Annotated[
        dict[str, str],
        Env(
            "NODE_SELECTOR",
            "node labels a job's pod must be placed on",
            parse=parse_labels,
            form="`key=value,...`",
        ),
    ] = {}
    tolerations: Annotated[
        tuple[dict[str, Any], ...],
        Env(
            "TOLERATIONS",
            'tolerations for every job\'s pod, e.g. `[{"key": "gpu", "operator": "Exists", '
            '"effect": "NoSchedule"}]` (checked at start-up)',
            parse=parse_tolerations,
            form="JSON list",
        ),
    ] = ()
    image_pull_secrets: Annotated[
        tuple[str, ...],
        Env("IMAGE_PULL_SECRETS", "comma-separated Secret names for pulling job images"),
    ] = ()
    gpu_resource: Annotated[
        str,
        Env("KUBERNETES_GPU_RESOURCE", "the extended resource a job's `gpu_limit` asks for"),
    ] = "nvidia.com/gpu"
    run_as_user: Annotated[
        int | None,
        Env(
            "SECURITYCONTEXT_RUN_AS_USER",
            "the UID job pods run as when `CONTAINER_USER` does not say",
            ge=0,
        ),
    ] = None
    run_as_group: Annotated[
        int | None,
        Env(
            "SECURITYCONTEXT_RUN_AS_GROUP",
            "the GID job pods run as when `CONTAINER_USER` does not say",
            ge=0,
        ),
    ] = None
    job_ttl_seconds: Annotated[
        int,
        Env(
            "JOB_TTL_SECONDS",
            "how long a finished Job stays in the cluster (`ttlSecondsAfterFinished`, at least "
            "60, so the tracker sees how it ended); pman's registry keeps its state and logs "
            "after that",
            ge=60,
        ),
    ] = 86400
    pending_timeout: Annotated[
        float,
        Env(
            "PMAN_KUBERNETES_PENDING_TIMEOUT",
            "seconds a pod may fail to start (image pull failing, config error, "
            "unschedulable) before its job is `finishedWithError` with Kubernetes' reason",
            ge=1.0,
        ),
    ] = 120.0

    def check(
        self, storage: StorageSettings, jobs: JobSettings, environ: Environ, problems: Problems
    ) -> None:
        # every pod carries JOB_LABELS as labels
        bad = {k: v for k, v in jobs.labels.items() if not (is_label_key(k) and is_label_value(v))}
        if bad:
            problems.add(
                environ.name_of("JOB_LABELS"),
                f"{bad} are not valid Kubernetes labels (keys: [prefix/]name, "
                "values: at most 63 letters, digits, '-', '_', '.')",
            )
