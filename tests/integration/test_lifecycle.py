"""The whole v1 lifecycle through HTTP, on every backend."""

from __future__ import annotations

import os
import time
import uuid

from tests.integration.conftest import Pman


def test_full_lifecycle(pman: Pman) -> None:
    body = pman.body(args=["--prefix", "out-"])
    resp = pman.post(body)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] in ("notstarted", "started", "finishedSuccessfully")
    assert created["cmd"].endswith("--prefix out- /share/incoming /share/outgoing")

    done = pman.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert (pman.out(body) / "out-data.txt").read_text() == "some data\n"
    native = pman.record(body["jid"]).native_id
    if pman.engine is not None:  # the registry knows the engine's own id
        assert native == pman.container(body["jid"])["Id"]  # type: ignore[index]
    assert "copied data.txt -> out-data.txt" in done["logs"]
    assert done["timestamp"] >= created["timestamp"][:19]

    assert pman.delete(body["jid"]).status_code == 204
    assert pman.get(body["jid"]).status_code == 404
    assert pman.delete(body["jid"]).status_code == 404
    if pman.engine is not None:
        assert pman.container(body["jid"]) is None, "DELETE left the container behind"


def test_failing_job_reports_its_exit_code(pman: Pman) -> None:
    body = pman.body("failplugin")
    assert pman.post(body).status_code == 201
    done = pman.wait(body["jid"])
    assert done["status"] == "finishedWithError"
    assert "exited with code 3" in done["message"]
    assert "failing on purpose" in done["logs"]


def test_fs_plugin_gets_only_the_output_folder(pman: Pman) -> None:
    body = pman.body(type="fs", args=[])
    assert pman.post(body).status_code == 201
    done = pman.wait(body["jid"])
    assert done["status"] == "finishedSuccessfully", done
    assert "in= out=" in done["logs"]
    assert (pman.out(body) / "report.txt").exists()


def test_env_is_passed_through(pman: Pman) -> None:
    body = pman.body(
        args=["--env", "GREETING", "--env", "EMPTY"], env=["GREETING=hello world", "EMPTY="]
    )
    assert pman.post(body).status_code == 201
    assert pman.wait(body["jid"])["status"] == "finishedSuccessfully"
    report = (pman.out(body) / "report.txt").read_text()
    assert "env GREETING=hello world" in report
    assert "env EMPTY=\n" in report


def test_path_flags_point_at_the_input(pman: Pman) -> None:
    body = pman.body(args=["--mask", "somewhere/mask.nii"], args_path_flags=["--mask"])
    assert pman.post(body).status_code == 201
    assert pman.wait(body["jid"])["status"] == "finishedSuccessfully"
    report = (pman.out(body) / "report.txt").read_text()
    expected = (
        str((pman.storebase / "key-1" / "incoming").resolve())
        if pman.backend == "local"
        else "/share/incoming"
    )
    assert f"mask {expected}\n" in report


def test_same_request_twice_is_one_job_different_is_409(pman: Pman) -> None:
    body = pman.body(args=["--sleep", "1"])
    first = pman.post(body)
    again = pman.post(body)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["jid"] == body["jid"]
    clash = pman.post({**body, "cpu_limit": 2000})
    assert clash.status_code == 409
    assert body["jid"] in clash.json()["message"]
    done = pman.wait(body["jid"])
    assert done["logs"].count("copyplugin: done") == 1, "the job ran more than once"


def test_delete_of_a_running_job_stops_it(pman: Pman) -> None:
    seconds = str(300 + uuid.uuid4().int % 10000)  # marks this test's process
    body = pman.body("sleeper", args=[seconds], type="fs")
    assert pman.post(body).status_code == 201
    pman.wait(body["jid"], until=("started",))

    def sleeping() -> bool:
        # a container's processes are this machine's too
        return any(
            f"sleep\x00{seconds}".encode() in _cmdline(pid)
            for pid in os.listdir("/proc")
            if pid.isdigit()
        )

    deadline = time.monotonic() + 60
    while not sleeping():
        assert time.monotonic() < deadline, "the job's sleep never started"
        time.sleep(0.1)
    t0 = time.monotonic()
    assert pman.delete(body["jid"]).status_code == 204
    # without waiting for the job, which would sleep for 300 s and more
    assert time.monotonic() - t0 < 60
    assert pman.get(body["jid"]).status_code == 404
    if pman.engine is not None:
        assert pman.container(body["jid"]) is None
    else:
        assert not sleeping(), "the local job's process survived DELETE"


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_escaping_paths_are_refused(pman: Pman) -> None:
    outside = pman.storebase.parent / "outside"
    outside.mkdir(exist_ok=True)
    (pman.storebase / "key-1" / "link").symlink_to(outside)
    for field, value in (("input_dir", "key-1/link"), ("output_dir", "../x"), ("output_dir", "")):
        body = pman.body(**{field: value})
        resp = pman.post(body)
        assert resp.status_code == 400, resp.text
        assert field in resp.json()["fields"]
        assert pman.get(body["jid"]).status_code == 404


def test_server_info_and_health(pman: Pman) -> None:
    import requests

    info = requests.get(f"{pman.url}/api/v1/", timeout=10).json()
    assert info["container_env"] == pman.backend
    health = requests.get(f"{pman.url}/health", timeout=10)
    assert health.status_code == 200, health.text
