"""Local jobs run confined (pman.backends.local.sandbox, .cgroup): from
INSIDE real jobs of a real ``pman serve``, through its HTTP API, each escape
the issue found is tried and must fail, while the job's own folders work.

Every probe also does something that must succeed (read its own environ, its
own input, write its own output), so a probe that broke would fail the test
rather than pass it for the wrong reason.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pman.backends.local import cgroup as local_cgroup
from tests.helpers import job_body, start_server
from tests.integration.conftest import Pman, engine_missing

pytestmark = pytest.mark.local

TOKEN = secrets.token_hex(32)
SECRET_KEY = secrets.token_hex(32)
NOBODY = 65534


class Served:
    """A `pman serve` (granian, tracker process) with known secrets in its environment."""

    def __init__(self, url: str, pid: int, storebase: Path, data: Path) -> None:
        self.url, self.pid, self.storebase, self.data = url, pid, storebase, data
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TOKEN}"

    def run(self, script: str, timeout: float = 60, **overrides: Any) -> dict[str, Any]:
        """Run ``script`` with sh as a ds job: $1 is its input folder, $2 its output."""
        body = job_body(entrypoint=["sh", "-c", script, "probe"], args=[], **overrides)
        resp = self.http.post(f"{self.url}/api/v1/", json=body, timeout=60)
        assert resp.status_code == 201, resp.text
        return self.wait(body["jid"], timeout)

    def wait(self, jid: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = self.http.get(f"{self.url}/api/v1/{jid}/", timeout=60).json()
            if data["status"] in ("finishedSuccessfully", "finishedWithError"):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"job {jid} still {data['status']} after {timeout}s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("sandbox")
    storebase, data = base / "storebase", base / "data"
    (storebase / "key-1" / "incoming").mkdir(parents=True)
    (storebase / "key-1" / "incoming" / "data.txt").write_text("my own data\n")
    # another job's folders, which no job but that one may see
    (storebase / "key-2" / "incoming").mkdir(parents=True)
    (storebase / "key-2" / "incoming" / "theirs.txt").write_text("THEIR-INPUT\n")
    (storebase / "key-2" / "outgoing").mkdir(parents=True)
    (storebase / "key-2" / "outgoing" / "result.txt").write_text("THEIR-OUTPUT\n")
    env = {
        **os.environ,
        "CONTAINER_ENV": "local",
        "STOREBASE": str(storebase),
        "PMAN_DATA_DIR": str(data),
        "PMAN_AUTH_TOKENS": TOKEN,
        "SECRET_KEY": SECRET_KEY,
    }
    pman = Path(sys.executable).with_name("pman")
    proc, url, _ = start_server([str(pman), "serve", "--port", "0", "--workers", "1"], env, 1)
    try:
        _until_answers(url)
        yield Served(url, proc.pid, storebase, data)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # how pman serve stops is test_serve's business
            proc.kill()
            proc.wait()


def _until_answers(url: str, timeout: float = 60) -> None:
    """Wait for the server to accept connections: on a loaded machine a first
    request right after granian reported its worker started was refused."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{url}/health", timeout=10)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_proc_shows_the_job_only_its_own_processes_and_no_secret(served: Served) -> None:
    # the secrets are there to find, outside the sandbox: pman's own environment
    environ = Path(f"/proc/{served.pid}/environ").read_bytes()
    assert TOKEN.encode() in environ and SECRET_KEY.encode() in environ
    marker = uuid.uuid4().hex
    script = (
        'echo "shell $$"; '
        'for f in /proc/[0-9]*/environ; do echo "== $f"; tr "\\0" "\\n" < "$f"; done; '
        'for f in /proc/[0-9]*/cmdline; do echo "cmd $f: $(tr "\\0" " " < "$f")"; done'
    )
    done = served.run(script, env=[f"PROBE_MARKER={marker}"])
    logs = done["logs"]
    assert done["status"] == "finishedSuccessfully", done
    # the walk read environ files: its own, with the job's variable in it
    assert f"PROBE_MARKER={marker}" in logs, logs
    assert TOKEN not in logs and SECRET_KEY not in logs, logs
    # a PID namespace of its own: pid 1 is bwrap's init, 2 the job's command,
    # and nothing of pman's
    assert "shell 2\n" in logs, logs
    commands = re.findall(r"^cmd /proc/\d+/cmdline: (.*)$", logs, re.MULTILINE)
    assert commands and not [c for c in commands if "pman" in c or "python" in c], commands


def test_the_job_cannot_read_pmans_data_or_other_jobs(served: Served) -> None:
    registry = served.data / "pman.db"
    other_jobs = served.data / "local" / "jobs"
    targets = {
        "registry": registry,
        "data dir": served.data,
        "job records": other_jobs,
        "their input": served.storebase / "key-2" / "incoming" / "theirs.txt",
        "their output": served.storebase / "key-2" / "outgoing" / "result.txt",
    }
    lines = [f'try "{name}" "{path}"' for name, path in targets.items()]
    script = "\n".join(
        [
            'try() { if cat "$2" 2>/dev/null || ls -A "$2" 2>/dev/null | grep -q .; '
            'then echo "SEEN $1"; else echo "hidden $1"; fi; }',
            *lines,
            'try "their input, from mine" "$1/../../key-2/incoming/theirs.txt"',
            'try "their input, from /share" /share/incoming/../../key-2/incoming/theirs.txt',
            'try "my input" "$1/data.txt"',
            'try "my input at /share" /share/incoming/data.txt',
            # its folders' host paths exist in the sandbox, and only they
            f'echo "storebase: $(ls -A "{served.storebase}" | tr "\\n" " ")"',
            f'echo "key-1: $(ls -A "{served.storebase}/key-1" | tr "\\n" " ")"',
        ]
    )
    done = served.run(script)
    logs = done["logs"]
    assert done["status"] == "finishedSuccessfully", done
    # there was something to find: the registry, the job's own record at least
    assert registry.is_file() and any(other_jobs.iterdir())
    assert "SEEN my input\n" in logs and "SEEN my input at /share\n" in logs, logs
    assert logs.count("my own data") == 2, logs
    seen = re.findall(r"^SEEN (.*)$", logs, re.MULTILINE)
    assert sorted(seen) == ["my input", "my input at /share"], logs
    assert "storebase: key-1 \n" in logs, logs
    assert re.search(r"^key-1: (incoming outgoing|outgoing incoming) $", logs, re.MULTILINE), logs
    assert "THEIR-INPUT" not in logs and "THEIR-OUTPUT" not in logs and "SQLite" not in logs


def test_the_job_cannot_write_outside_its_output_folder(served: Served) -> None:
    tag = f"escape-{uuid.uuid4().hex[:8]}"
    targets = [
        served.storebase / tag,
        served.storebase / "key-2" / "outgoing" / tag,
        served.data / tag,
        Path("/tmp") / tag,
        Path("/usr") / tag,
        Path("/etc") / tag,
        Path("/") / tag,
    ]
    script = "\n".join(
        [
            *(f'echo x > "{t}" 2>/dev/null && echo "wrote {t}"' for t in targets),
            f'echo x > "$1/{tag}" 2>/dev/null && echo "wrote into my input"',
            f'echo x > /share/incoming/{tag} 2>/dev/null && echo "wrote into /share/incoming"',
            f'echo mine > "$2/{tag}" && echo "wrote my output"',
            f'echo mine > /share/outgoing/{tag}-share && echo "wrote my output at /share"',
        ]
    )
    body_out = served.storebase / "key-1" / "outgoing"
    done = served.run(script)
    assert done["status"] == "finishedSuccessfully", done
    logs = done["logs"]
    assert "wrote my output\n" in logs and "wrote my output at /share\n" in logs, logs
    assert "into my input" not in logs and "into /share/incoming" not in logs, logs
    # whatever the job managed inside its sandbox (its private /tmp takes files),
    # nothing reached the host but its own output
    for target in targets:
        assert not target.exists(), f"the job wrote {target} on the host"
    assert not (served.storebase / "key-1" / "incoming" / tag).exists()
    assert (body_out / tag).read_text() == "mine\n"
    assert (body_out / f"{tag}-share").read_text() == "mine\n"
    assert (body_out / tag).stat().st_uid == NOBODY


STATUS_PROBE = (
    'echo "uid $(id -u) gid $(id -g) groups $(id -G)"; '
    "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status; "
    "if unshare --user true 2>/dev/null; then echo 'Userns: made'; else echo 'Userns: refused'; fi"
)


def _status(logs: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+):\s*(\S+)$", logs, re.MULTILINE))


def test_the_job_runs_unprivileged(served: Served) -> None:
    done = served.run(STATUS_PROBE)
    assert done["status"] == "finishedSuccessfully", done
    assert f"uid {NOBODY} gid {NOBODY} groups {NOBODY}\n" in done["logs"], done["logs"]
    found = _status(done["logs"])
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert found[cap] == "0000000000000000", found
    assert found["NoNewPrivs"] == "1", found
    # --disable-userns: no user namespace of its own to gain capabilities in
    assert found["Userns"] == "refused", found


def test_pman_local_user_chooses_the_jobs_user(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("local", PMAN_LOCAL_USER="4321:4322")
    body = p.body(entrypoint=["sh", "-c", STATUS_PROBE + '; touch "$2/mine"', "probe"], args=[])
    assert p.post(body).status_code == 201
    done = p.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert "uid 4321 gid 4322 groups 4322\n" in done["logs"], done["logs"]
    assert _status(done["logs"])["CapEff"] == "0000000000000000"
    mine = p.out(body) / "mine"
    assert (mine.stat().st_uid, mine.stat().st_gid) == (4321, 4322)


def _cgroups() -> local_cgroup.CgroupSupport:
    """The cgroups pman can use here; fails in CI (PMAN_REQUIRE_ENGINES) when none."""
    support = local_cgroup.detect()
    if set(support.parents) != {"memory", "cpu"}:
        engine_missing(f"cgroups cannot enforce local jobs' limits here: {support.problems}")
    return support


def _job_cgroups(support: local_cgroup.CgroupSupport, jid: str) -> list[Path]:
    return sorted(p for parent in set(support.parents.values()) for p in parent.glob(f"{jid}-*"))


def test_memory_limit_kills_a_job_that_goes_over_it(make_pman: Callable[..., Pman]) -> None:
    support = _cgroups()
    p = make_pman("local")
    body = p.body("memhog", args=["--size", "256M"], memory_limit=32, type="fs")
    assert p.post(body).status_code == 201, body
    done = p.wait(body["jid"])
    assert done["status"] == "finishedWithError", done
    assert done["message"].startswith("killed: out of memory (memory_limit 32 MiB)"), done
    assert "memhog: allocating 256M" in done["logs"]
    # the supervisor removed the job's cgroup before it recorded the outcome
    assert _job_cgroups(support, body["jid"]) == []


def test_limits_are_the_jobs_cgroup_and_go_with_it(make_pman: Callable[..., Pman]) -> None:
    support = _cgroups()
    p = make_pman("local")
    body = p.body("sleeper", args=["300"], memory_limit=96, cpu_limit=500, type="fs")
    assert p.post(body).status_code == 201, body
    p.wait(body["jid"], until=("started",))
    folders = _job_cgroups(support, body["jid"])
    assert folders, "the job has no cgroup"
    memory = support.parents["memory"] / folders[0].name
    cpu = support.parents["cpu"] / folders[0].name
    if support.version == 1:
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    else:
        assert (memory / "memory.max").read_text().strip() == str(96 << 20)
        assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
    # the sandbox and the job are in it (the supervisor is not: it must not be
    # the one the kernel kills for the job's memory)
    pids = (memory / "cgroup.procs").read_text().split()
    assert pids and p.record(body["jid"]).native_id not in "".join(
        Path(f"/proc/{pid}/cmdline").read_text() for pid in pids
    )
    assert p.delete(body["jid"]).status_code == 204
    assert _job_cgroups(support, body["jid"]) == []


def test_ignore_limits_sets_none(make_pman: Callable[..., Pman]) -> None:
    p = make_pman("local", IGNORE_LIMITS="yes")
    body = p.body("memhog", args=["--size", "64M"], memory_limit=16, type="fs")
    assert p.post(body).status_code == 201
    done = p.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done


def test_what_local_can_never_run_is_400_and_never_recorded(
    make_pman: Callable[..., Pman],
) -> None:
    """GPUs, several workers, a memory_limit below the sandbox's minimum (with
    a memory cgroup) and CONTAINER_USER are refused before anything is
    recorded (Backend.check), also when the job would wait in pman's queue."""
    p = make_pman("local", PMAN_MAX_RUNNING="1")
    refused = [({"gpu_limit": 1}, "gpu_limit"), ({"number_of_workers": 2}, "number_of_workers")]
    if "memory" in local_cgroup.detect().parents:
        refused.append(({"memory_limit": 4}, "memory_limit"))

    def all_refused() -> None:
        for overrides, field in refused:
            body = p.body(**overrides)
            resp = p.post(body)
            assert resp.status_code == 400, resp.text
            assert field in resp.json()["fields"], resp.text
            assert p.get(body["jid"]).status_code == 404

    all_refused()
    # the one place taken: a job that can run waits in pman's queue, these do not
    sleeper = p.body("sleeper", args=["60"], type="fs")
    assert p.post(sleeper).status_code == 201
    waiting = p.post(p.body())
    assert waiting.status_code == 201 and waiting.json()["status"] == "notstarted", waiting.text
    assert waiting.json()["message"].startswith("queued by pman"), waiting.text
    all_refused()

    other = make_pman("local", CONTAINER_USER="1234:1234", PMAN_MAX_RUNNING="1")
    body = other.body()
    resp = other.post(body)
    assert resp.status_code == 400, resp.text
    assert "CONTAINER_USER is not supported" in resp.json()["message"], resp.text
    assert other.get(body["jid"]).status_code == 404


def test_a_program_outside_the_system_folders_is_shown_alone(
    make_pman: Callable[..., Pman], tmp_path: Path
) -> None:
    """A program in an operator's folder is shown to its job as that one file,
    not the folder around it."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "secret.txt").write_text("NEXT-TO-THE-PROGRAM\n")
    program = tools / "probe"
    program.write_text('#!/bin/sh\necho "I am $0"; ls -A "${0%/*}"; cat "${0%/*}/secret.txt"\n')
    program.chmod(0o755)
    p = make_pman("local")
    body = p.body(entrypoint=[str(program)], args=[], type="fs")
    assert p.post(body).status_code == 201
    done = p.wait(body["jid"])
    assert done["status"] == "finishedWithError", done  # cat found no secret.txt
    assert f"I am {program}\nprobe\n" in done["logs"], done["logs"]
    assert "NEXT-TO-THE-PROGRAM" not in done["logs"]


def test_read_only_paths_show_a_programs_interpreter(
    make_pman: Callable[..., Pman], tmp_path: Path
) -> None:
    """A program whose interpreter the sandbox does not show cannot start: a
    system error saying so. PMAN_LOCAL_READ_ONLY_PATHS shows it."""
    tools = tmp_path / "tools"
    tools.mkdir()
    interpreter = tools / "interp"
    interpreter.write_text('#!/bin/sh\necho "interpreted by $0: $1"\n')
    program = tools / "plugin"
    program.write_text(f"#!{interpreter}\n")
    for f in (interpreter, program):
        f.chmod(0o755)
    bare = make_pman("local")
    body = bare.body(entrypoint=[str(program)], args=[], type="fs")
    assert bare.post(body).status_code == 201
    done = bare.wait(body["jid"])
    assert done["status"] == "finishedWithError", done
    assert "its program not started" in done["message"], done
    assert "No such file or directory" in done["logs"], done["logs"]

    shown = make_pman("local", PMAN_LOCAL_READ_ONLY_PATHS=str(tools))
    body = shown.body(entrypoint=[str(program)], args=[], type="fs")
    assert shown.post(body).status_code == 201
    done = shown.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert f"interpreted by {interpreter}: {program}" in done["logs"], done["logs"]


#: serve pman's app on a free port of 127.0.0.1 and print the port once it listens
SERVE_APP = """
from werkzeug.serving import make_server
from pman.app import create_app
server = make_server("127.0.0.1", 0, create_app(), threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


def _python_for(uid: int) -> tuple[str, dict[str, str]] | None:
    """A Python that user ``uid`` can run pman with (this one may live in root's
    home), and the PYTHONPATH it needs; None if there is none."""
    paths = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), sysconfig.get_paths()["purelib"]]
    )
    for python in (sys.executable, "/usr/bin/python3"):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": paths}
        try:
            check = subprocess.run(
                [python, "-c", "import pman.backends.local.adapter, granian"],
                env=env,
                user=uid,
                group=uid,
                extra_groups=[],
                capture_output=True,
                check=False,
            )
        except OSError:  # not executable by that user
            continue
        if check.returncode == 0:
            return python, env
    return None


@pytest.fixture
def unprivileged_home() -> Iterator[Path]:
    """A folder user nobody owns and can reach (pytest's are private to root)."""
    home = Path(tempfile.mkdtemp(prefix="pman-nobody-"))
    os.chmod(home, 0o755)
    (home / "storebase" / "key-1" / "incoming").mkdir(parents=True)
    (home / "storebase" / "key-1" / "incoming" / "data.txt").write_text("nobody's data\n")
    for folder, _, files in os.walk(home):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            os.chown(name, NOBODY, NOBODY)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_pman_that_is_not_root_runs_jobs_as_itself_in_a_user_namespace(
    unprivileged_home: Path,
) -> None:
    if os.geteuid() != 0:
        engine_missing("needs root to start a pman as another user")
    found = _python_for(NOBODY)
    if found is None:
        engine_missing("no Python here that user nobody can run pman with")
    python, env = found
    env = {
        **env,
        "HOME": str(unprivileged_home),
        "CONTAINER_ENV": "local",
        "STOREBASE": str(unprivileged_home / "storebase"),
        "PMAN_DATA_DIR": str(unprivileged_home / "data"),
        "PMAN_AUTH_TOKENS": TOKEN,
    }
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    # asked to run jobs as someone else, it refuses to start, with one message
    refused = subprocess.run(
        [*as_nobody, python, "-m", "pman", "serve", "--port", "0"],
        env={**env, "PMAN_LOCAL_USER": "4321:4321"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "PMAN_LOCAL_USER" in refused.stderr and "not root" in refused.stderr
    assert "Traceback" not in refused.stderr

    # the app under werkzeug, as the other integration tests serve it: what is
    # tested is the backend as nobody, not pman serve's process tree
    proc = subprocess.Popen(
        [*as_nobody, python, "-c", SERVE_APP],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.isdigit(), f"the app did not start (exit code {proc.poll()})"
        url = f"http://127.0.0.1:{port}"
        served = Served(url, proc.pid, unprivileged_home / "storebase", unprivileged_home / "data")
        script = (
            STATUS_PROBE + '; cat "$1/data.txt"; cp "$1/data.txt" "$2/copy"; '
            'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < "$f"; done; '
            f'ls -A "{unprivileged_home}" | tr "\\n" " "; echo'
        )
        done = served.run(script, env=["MINE=1"])
        logs = done["logs"]
        assert done["status"] == "finishedSuccessfully", done
        assert f"uid {NOBODY} gid {NOBODY}" in logs and "nobody's data" in logs, logs
        found_status = _status(logs)
        assert found_status["CapEff"] == "0000000000000000", logs
        assert found_status["NoNewPrivs"] == "1", logs
        assert found_status["Userns"] == "refused", logs
        assert "MINE=1" in logs and TOKEN not in logs, logs
        # of pman's folder the job sees only STOREBASE's path to its own folders
        assert "\nstorebase \n" in logs, logs
        copy = unprivileged_home / "storebase" / "key-1" / "outgoing" / "copy"
        assert copy.read_text() == "nobody's data\n"
    finally:
        proc.kill()
        proc.wait(timeout=30)
