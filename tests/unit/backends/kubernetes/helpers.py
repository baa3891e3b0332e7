"""What the Kubernetes backend's unit tests share: a site's settings and
configuration (a kubeconfig whose server never answers), job requests, and
Jobs and pods as the API gives them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pman.backends.kubernetes import KubernetesBackend
from pman.backends.kubernetes.config import KubernetesConfig
from pman.backends.kubernetes.manifest import job_manifest
from pman.jobs import build_spec
from pman.models import JobRequest, JobSpec
from pman.settings import Settings, load_settings
from pman.storage import Storage

#: the Kubernetes version whose schemas the Job must satisfy
K8S_VERSION = "1.30.0"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def settings(tmp_path: Path, **env: str) -> Settings:
    storebase = tmp_path / "storebase"
    (storebase / "in").mkdir(parents=True, exist_ok=True)
    return load_settings(
        {
            "CONTAINER_ENV": "kubernetes",
            "STOREBASE": str(storebase),
            "KUBECONFIG": str(kubeconfig(tmp_path)),
            "PMAN_DATA_DIR": str(tmp_path / "data"),
            **env,
        }
    )


def backend(tmp_path: Path, **env: str) -> KubernetesBackend:
    return KubernetesBackend.from_settings(settings(tmp_path, **env))


@dataclass(frozen=True)
class Site:
    """A pman's settings and the Kubernetes configuration read from them."""

    settings: Settings
    config: KubernetesConfig


def site(tmp_path: Path, **env: str) -> Site:
    s = settings(tmp_path, **env)
    return Site(s, KubernetesConfig.from_settings(s))


def request(**overrides: Any) -> JobRequest:
    fields: dict[str, Any] = dict(
        jid="job-1",
        args=["--greeting", "$(HOME) costs $5"],
        args_path_flags=[],
        auid="chris@example.org",
        number_of_workers=1,
        cpu_limit=500,
        memory_limit=128,
        gpu_limit=0,
        image="ghcr.io/fnndsc/pl-simpledsapp:2.1.0",
        entrypoint=["simpledsapp"],
        type="ds",
        env=["GREETING=$(NAME)", "PLAIN=1"],
        input_dir="in",
        output_dir="out",
    )
    fields.update(overrides)
    return JobRequest(**fields)


def spec(s: Site, **overrides: Any) -> JobSpec:
    return build_spec(request(**overrides), s.settings, Storage(s.settings))


def manifest(s: Site, **overrides: Any) -> dict[str, Any]:
    return job_manifest(spec(s, **overrides), s.config)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


# ------------------------------------------------------------------ API objects


def job(status: dict[str, Any] | None = None, workers: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-1",
            "uid": "u1",
            "creationTimestamp": iso(NOW - timedelta(minutes=5)),
            "labels": {"org.chrisproject.pman": "true", "org.chrisproject.pman.fingerprint": "f"},
            "annotations": {"org.chrisproject.pman.image": "img:1"},
        },
        "spec": {
            "completions": workers,
            "parallelism": workers,
            "activeDeadlineSeconds": 1800,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "job",
                            "image": "img:1",
                            "command": ["run"],
                            "args": ["$$5"],
                            "resources": {"limits": {"memory": "64Mi"}},
                        }
                    ]
                }
            },
            **spec,
        },
        "status": status if status is not None else {},
    }


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": iso(NOW),
    }


def pod(
    phase: str,
    index: int = 0,
    state: dict[str, Any] | None = None,
    age: float = 10,
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"job-1-{index}-abcde",
            "creationTimestamp": iso(NOW - timedelta(seconds=age)),
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "ownerReferences": [{"kind": "Job", "uid": "u1", "controller": True}],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "job", "state": state or {}}],
            **status,
        },
    }


def terminated(code: int, reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": iso(NOW - timedelta(seconds=4)),
            "finishedAt": iso(NOW - timedelta(seconds=1)),
        }
    }
