"""The command-line client (`python -m pman submit|status|...`) against a running
`pman serve` (local backend, a bearer token), run as a user would: subprocesses.

`cancel` and `logs --follow` run against the real pman too, and against a stub
server speaking that contract for what an older pman (without those
endpoints) answers."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers import start_server
from tests.integration.conftest import PLUGIN_BIN

pytestmark = pytest.mark.local

TOKEN = secrets.token_hex(32)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("cli")
    storebase = tmp / "storebase"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("from the cli\n")
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(tmp / "data"),
        "PMAN_AUTH_TOKENS": TOKEN,
        "PMAN_ACCESS_LOG": "no",
    }
    argv = [sys.executable, "-m", "pman", "serve", "--port", "0", "--workers", "1"]
    proc, url, _ = start_server(argv, env, 1)
    try:
        yield url, storebase
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def cli(url: str, *args: str, token: str | None = TOKEN, timeout: float = 60) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ("PMAN_URL", "PMAN_TOKEN")}
    if token is not None:
        env["PMAN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "pman", "--url", url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit_args(jid: str, plugin: str, out: str, *extra: str) -> list[str]:
    return [
        "submit",
        "--jid",
        jid,
        "--image",
        "unused-by-local",
        "--entrypoint",
        str(PLUGIN_BIN / plugin),
        "--input-dir",
        "key-1/incoming",
        "--output-dir",
        out,
        "--interval",
        "0.2",
        *extra,
    ]


def test_submit_wait_follows_the_job_and_exits_as_it_did(served: tuple[str, Path]) -> None:
    url, storebase = served
    ok = cli(
        url, *submit_args("cli-ok", "copyplugin", "key-1/out-ok", "--wait", "--", "--prefix", "x-")
    )
    assert ok.returncode == 0, ok.stderr
    assert "cli-ok: finishedSuccessfully (exited with code 0)" in ok.stderr, "progress shown"
    assert "status:    finishedSuccessfully" in ok.stdout
    assert "--prefix x-" in ok.stdout, "the plugin arguments were passed"
    assert (storebase / "key-1" / "out-ok" / "x-data.txt").read_text() == "from the cli\n"

    failed = cli(url, *submit_args("cli-fail", "failplugin", "key-1/out-fail", "--wait", "--json"))
    assert failed.returncode == 3, "the job's own exit code"
    assert json.loads(failed.stdout)["status"] == "finishedWithError"

    # without --wait: the job as accepted, exit 0 whatever becomes of it
    quick = cli(url, *submit_args("cli-nowait", "failplugin", "key-1/out-nowait", "--json"))
    assert quick.returncode == 0 and json.loads(quick.stdout)["jid"] == "cli-nowait"


def test_status_list_logs_delete(served: tuple[str, Path]) -> None:
    url, _ = served
    first = cli(url, *submit_args("cli-a", "copyplugin", "key-1/out-a"))
    assert first.returncode == 0, first.stderr
    waited = cli(url, "status", "cli-a", "--wait", "--interval", "0.2")
    assert waited.returncode == 0 and "finishedSuccessfully" in waited.stdout
    again = cli(url, "status", "cli-a", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["status"] == "finishedSuccessfully"

    listed = cli(url, "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:5] == ["JID", "STATUS", "STATE", "EXIT", "SUBMITTED"]
    assert any(r.split()[:4] == ["cli-a", "finishedSuccessfully", "succeeded", "0"] for r in rows)
    failed_only = cli(url, "list", "--status", "finishedWithError", "--json")
    assert failed_only.returncode == 0
    assert {j["status"] for j in json.loads(failed_only.stdout)} <= {"finishedWithError"}
    assert "cli-a" not in {j["jid"] for j in json.loads(failed_only.stdout)}

    logs = cli(url, "logs", "cli-a")
    assert logs.returncode == 0
    assert "copied data.txt -> copy-data.txt" in logs.stdout
    tail = cli(url, "logs", "cli-a", "--tail", "1")
    assert tail.stdout == "copyplugin: done\n"
    followed = cli(url, "logs", "cli-a", "--follow")  # a finished job: its logs, then exit
    assert followed.returncode == 0 and followed.stdout.endswith("copyplugin: done\n")

    deleted = cli(url, "delete", "cli-a")
    assert deleted.returncode == 0 and "cli-a: deleted" in deleted.stdout
    gone = cli(url, "status", "cli-a")
    assert gone.returncode == 3
    assert "404" in gone.stderr and "no job named 'cli-a'" in gone.stderr
    assert cli(url, "delete", "cli-a").returncode == 3


def test_errors_are_clear_and_have_their_exit_codes(served: tuple[str, Path]) -> None:
    url, _ = served
    anonymous = cli(url, "list", token=None)
    assert anonymous.returncode == 4
    assert "401" in anonymous.stderr and "Authorization: Bearer" in anonymous.stderr
    assert cli(url, "list", token="wrong-" + TOKEN).returncode == 4

    bad = cli(url, *submit_args("cli-bad", "copyplugin", "../../etc", "--memory-limit", "0"))
    assert bad.returncode == 2
    assert "400" in bad.stderr and "memory_limit" in bad.stderr and "Traceback" not in bad.stderr

    missing = cli(url, "submit", "--image", "x")
    assert missing.returncode == 2 and "--entrypoint" in missing.stderr

    assert cli(url, *submit_args("cli-same", "copyplugin", "key-1/out-same")).returncode == 0
    clash = cli(url, *submit_args("cli-same", "copyplugin", "key-1/out-other"))
    assert clash.returncode == 6 and "409" in clash.stderr

    down = cli("http://127.0.0.1:9", "list")  # nothing listens on the discard port
    assert down.returncode == 5 and "cannot reach pman" in down.stderr

    # cancelling a finished job changes nothing; an unknown one is "not found"
    done = cli(url, "cancel", "cli-same")
    assert done.returncode == 0 and "finishedSuccessfully" in done.stdout, done
    assert cli(url, "cancel", "no-such-job").returncode == 3


def test_submit_from_a_json_file(served: tuple[str, Path], tmp_path: Path) -> None:
    url, storebase = served
    request = {
        "jid": "cli-file",
        "args": ["--prefix", "f-"],
        "auid": "someone",
        "image": "unused-by-local",
        "entrypoint": [str(PLUGIN_BIN / "copyplugin")],
        "type": "ds",
        "input_dir": "key-1/incoming",
        "output_dir": "key-1/out-file",
        "number_of_workers": 1,
        "cpu_limit": 500,
        "memory_limit": 64,
        "gpu_limit": 0,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(request))
    done = cli(url, "submit", "-f", str(path), "--wait", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    assert (storebase / "key-1" / "out-file" / "f-data.txt").exists()
    listed = json.loads(cli(url, "list", "--json").stdout)
    assert next(j for j in listed if j["jid"] == "cli-file")["auid"] == "someone"


# ---------------------------------------------------------------- the stub
class _Stub(BaseHTTPRequestHandler):
    """POST /api/v1/<jid>/cancel/ and GET /api/v1/<jid>/logs/?follow=true as
    the API's contract says (chunked text/plain while following)."""

    calls: list[tuple[str, str, dict[str, list[str]]]] = []

    def _record(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.calls.append((self.command, parts.path, query))
        assert self.headers["Authorization"] == f"Bearer {TOKEN}"
        return parts.path, query

    def do_POST(self) -> None:
        path, _ = self._record()
        if path == "/api/v1/job-1/cancel/":
            body = json.dumps({"jid": "job-1", "status": "finishedWithError"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._not_found()

    def do_GET(self) -> None:
        path, _ = self._record()
        if path != "/api/v1/job-1/logs/":
            return self._not_found()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in ("line 1\n", "line 2\n", "the end\n"):
            data = line.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _not_found(self) -> None:
        body = json.dumps({"message": "no job named 'other'"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    _Stub.protocol_version = "HTTP/1.1"
    _Stub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cancel_and_follow_logs_speak_the_endpoints_contract(stub: str) -> None:
    cancelled = cli(stub, "cancel", "job-1")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == "job-1: cancelled: finishedWithError\n"
    followed = cli(stub, "logs", "job-1", "--follow", "--tail", "5")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line 1\nline 2\nthe end\n"
    assert ("GET", "/api/v1/job-1/logs/", {"follow": ["true"], "tail": ["5"]}) in _Stub.calls
    assert ("POST", "/api/v1/job-1/cancel/", {}) in _Stub.calls


def test_cancel_and_follow_against_the_real_endpoints(served: tuple[str, Path]) -> None:
    url, _ = served
    started = cli(url, *submit_args("cli-sleeper", "sleeper", "key-1/out-sleeper", "--type", "fs",
                                    "60"))  # fmt: skip
    assert started.returncode == 0, started
    # the follow ends when the job does: the cancel below ends it
    follower = subprocess.Popen(
        [sys.executable, "-m", "pman", "--url", url, "--token", TOKEN, "logs", "--follow",
         "cli-sleeper"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    for _ in range(100):  # the sleeper must have started, to be cancelled while it runs
        status = cli(url, "status", "cli-sleeper")
        if "started" in status.stdout:
            break
    assert "started" in status.stdout, status
    cancelled = cli(url, "cancel", "cli-sleeper")
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout, cancelled
    out, _ = follower.communicate(timeout=60)
    assert follower.returncode == 0
    assert "sleeper: sleeping 60" in out
    status = cli(url, "status", "cli-sleeper")
    assert "finishedWithError" in status.stdout and "cancelled" in status.stdout, status
