"""Fixtures for tests of the Kubernetes API stand-in (tests/standins/kube)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.integration.conftest import engine_client

from .standin import KubeStandin

TOKEN = "standin-test-token"


@dataclass
class Kube:
    standin: KubeStandin
    kubeconfig: Path
    api: client.ApiClient
    batch: client.BatchV1Api
    core: client.CoreV1Api


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    """A started stand-in with a PVC "storebase" and an NFS server "nfs.example"; official
    client APIs built from the kubeconfig it writes.  At the end: stopped, nothing left."""
    engine_client("docker")  # its pods are Docker containers: skip or fail as for Docker
    store = tmp_path / "storebase"
    store.mkdir()
    nfs = tmp_path / "nfs"
    (nfs / "exports").mkdir(parents=True)
    standin = KubeStandin(
        token=TOKEN,
        pvcs={"storebase": store},
        nfs_exports={"nfs.example": nfs},
        image_pull_backoff_after=0.6,
    )
    standin.start()
    try:
        kubeconfig = standin.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")
        api = config.new_client_from_config(config_file=str(kubeconfig))
        yield Kube(standin, kubeconfig, api, client.BatchV1Api(api), client.CoreV1Api(api))
        assert standin.controller_errors() == []
        api.close()
    finally:
        standin.stop()
    assert standin.containers() == []
