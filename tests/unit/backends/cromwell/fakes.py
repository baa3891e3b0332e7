"""What the cromwell backend's unit tests share: settings, a job, and a
Cromwell server faked at the HTTP session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from pman.backends.cromwell import CromwellBackend
from pman.backends.cromwell.config import CromwellConfig
from pman.models import JobSpec, Mounts, Resources
from pman.settings import load_settings

URL = "http://cromwell.example:8000"
WID = "0b3b1c3e-1d7a-4f3e-9a43-6f1d3f0a0a0a"
MANAGED = "org.chrisproject.pman"
JID = "org.chrisproject.pman.jid"


def settings(tmp_path: Path, **env: str) -> Any:
    return load_settings(
        {
            "CONTAINER_ENV": "cromwell",
            "CROMWELL_URL": URL,
            "STOREBASE": str(tmp_path),
            "PMAN_DATA_DIR": str(tmp_path / "data"),
            **env,
        }
    )


def spec(tmp_path: Path, workers: int = 1, env: list[str] | None = None, **kw: Any) -> JobSpec:
    return JobSpec(
        name="job-1",
        image="localhost/img:1",
        command=[
            "copyplugin",
            "--say",
            "it's $HOME `x`\nnext",
            "/share/incoming",
            "/share/outgoing",
        ],
        env=["A=1", "QUOTED=a 'b' \"c\" $D"] if env is None else env,
        resources=Resources(workers, 1500, 64, 0),
        mounts=Mounts("key/in", "key/out", tmp_path / "key/in", tmp_path / "key/out"),
        plugin_type="ds",
        auid="chris",
        fingerprint="f",
        labels={MANAGED: "true", JID: "job-1", "team": "x"},
        **kw,
    )


def call(status: str, shard: int = 0, rc: int | None = None, **kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"executionStatus": status, "shardIndex": shard, "attempt": 1, **kw}
    if rc is not None:
        c["returnCode"] = rc
    return c


def md(status: str, *calls: dict[str, Any], workers: int = 1, **kw: Any) -> dict[str, Any]:
    return {
        "id": WID,
        "status": status,
        "calls": {"pman.plugin": list(calls)} if calls else {},
        "inputs": {"workers": workers},
        **kw,
    }


class FakeSession:
    """Answers requests from a list of (method, path suffix, status, body)."""

    def __init__(self, *answers: tuple[str, str, int, Any]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, **kw: Any) -> requests.Response:
        self.calls.append((method, url.removeprefix(URL), kw.get("params") or kw.get("json")))
        for i, (m, suffix, status, body) in enumerate(self.answers):
            if m == method and url.split("?")[0].endswith(suffix):
                del self.answers[i]
                if isinstance(body, Exception):
                    raise body
                r = requests.Response()
                r.status_code = status
                r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
                r.url = url
                r.reason = "reason"
                return r
        raise AssertionError(f"unexpected {method} {url}")

    def close(self) -> None:
        pass


def backend(tmp_path: Path, session: FakeSession) -> CromwellBackend:
    return CromwellBackend(CromwellConfig.from_settings(settings(tmp_path)), session=session)  # type: ignore[arg-type]


def found(status: str = "Running", jid: str = "job-1") -> dict[str, Any]:
    return {
        "results": [{"id": WID, "status": status, "labels": {MANAGED: "true", JID: jid}}],
        "totalResultsCount": 1,
    }


NONE: dict[str, Any] = {"results": [], "totalResultsCount": 0}
