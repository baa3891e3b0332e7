"""A pman that is already deployed (test_swarm.sh deploys one as a Swarm stack).

These tests speak only HTTP to PMAN_URL and look at job data in PMAN_STOREBASE,
the host folder the deployed pman was given as STOREBASE. Without them the
tests skip on a laptop and FAIL when a run requires engines
(PMAN_REQUIRE_ENGINES=1, or CI=true).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import job_body

REQUIRE = (
    os.environ.get("PMAN_REQUIRE_ENGINES", "").lower() in ("1", "true", "yes")
    or os.environ.get("CI", "").lower() == "true"
)
TEST_IMAGE = os.environ.get("PMAN_TEST_IMAGE", "localhost/pman-test-plugin:latest")
FINISHED = ("finishedSuccessfully", "finishedWithError")
#: a job can wait for a Swarm task to be scheduled: more than a local container
JOB_TIMEOUT = float(os.environ.get("PMAN_REMOTE_JOB_TIMEOUT", "120"))


@dataclass
class Deployed:
    """The deployed pman, and one test's folder in its STOREBASE."""

    url: str
    storebase: Path
    key: str
    auid: str
    jids: list[str] = field(default_factory=list)

    def body(self, plugin: str = "copyplugin", **overrides: Any) -> dict[str, Any]:
        b = job_body(
            **{
                "jid": f"pman-remote-{uuid.uuid4().hex[:10]}",
                "auid": self.auid,
                "entrypoint": [plugin],
                "image": TEST_IMAGE,
                "input_dir": f"{self.key}/incoming",
                "output_dir": f"{self.key}/outgoing-{uuid.uuid4().hex[:6]}",
                **overrides,
            }
        )
        self.jids.append(b["jid"].lstrip("/"))
        return b

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {**auth_headers(), **kw.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", timeout=60, headers=headers, **kw)

    def post(self, body: Any) -> requests.Response:
        return self.request("POST", "/api/v1/", json=body)

    def get(self, jid: str) -> requests.Response:
        return self.request("GET", f"/api/v1/{jid}/")

    def delete(self, jid: str) -> requests.Response:
        return self.request("DELETE", f"/api/v1/{jid}/")

    def wait(self, jid: str, until: tuple[str, ...] = FINISHED) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            resp = self.get(jid)
            assert resp.status_code == 200, resp.text
            data: dict[str, Any] = resp.json()
            if data["status"] in until:
                return data
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {jid} still {data['status']} after {JOB_TIMEOUT}s: {data!r}"
                )
            time.sleep(0.2)

    def out(self, body: dict[str, Any]) -> Path:
        return self.storebase / body["output_dir"]


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        reason = f"{name} is not set: these tests need a deployed pman (run test_swarm.sh)"
        if REQUIRE:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return value


def auth_headers() -> dict[str, str]:
    """The bearer token the deployed pman was given (PMAN_TOKEN), if any."""
    token = os.environ.get("PMAN_TOKEN", "")
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="session")
def pman_url() -> str:
    url = _required("PMAN_URL").rstrip("/")
    try:
        requests.get(f"{url}/api/v1/", headers=auth_headers(), timeout=10).raise_for_status()
    except requests.RequestException as e:
        pytest.fail(f"the deployed pman does not answer at {url}: {e}", pytrace=False)
    return url


@pytest.fixture(scope="session")
def storebase() -> Path:
    path = Path(_required("PMAN_STOREBASE"))
    if not path.is_dir():
        pytest.fail(f"PMAN_STOREBASE={path} is not a folder", pytrace=False)
    return path


@pytest.fixture
def deployed(pman_url: str, storebase: Path) -> Iterator[Deployed]:
    """The deployed pman with a fresh input folder; this test's jobs are deleted after it."""
    key = f"remote-{uuid.uuid4().hex[:8]}"
    (storebase / key / "incoming").mkdir(parents=True)
    (storebase / key / "incoming" / "data.txt").write_text("some data\n")
    d = Deployed(pman_url, storebase, key, auid=f"auid-{key}")
    yield d
    for jid in d.jids:
        with contextlib.suppress(requests.RequestException):
            d.delete(jid)
