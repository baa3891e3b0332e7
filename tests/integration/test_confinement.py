"""Jobs on docker, podman and swarm run confined (issue 7): every capability
dropped but PMAN_CAP_ADD's, no-new-privileges (not on swarm: Docker 20.10's
service API cannot set it), a read-only input, optionally a read-only root
filesystem with a writable /tmp; and the test plugins still work so."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Pman

CONFINED = ["docker", "podman", "swarm"]
#: what a job prints: its capability sets, no-new-privs, how / is mounted
#: (the images' own / may be mode 555: writability of / says nothing) and
#: whether /tmp takes a file
PROBE = (
    "grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; "
    "echo \"Root: $(grep -E '^[^ ]+ / ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1)\"; "
    "if touch /tmp/pman-probe 2>/dev/null; then echo 'Tmp: rw'; else echo 'Tmp: ro'; fi"
)


def probe(p: Pman) -> dict[str, str]:
    """Run PROBE as a job; its findings by name."""
    # a tenth of a CPU: the swarm reserves what a job asks, and tests share two CPUs
    body = p.body(entrypoint=["sh", "-c", PROBE, "probe"], type="fs", cpu_limit=100)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    return dict(re.findall(r"^(\w+):\s*(\S+)$", data["logs"], re.MULTILINE))


def copy_job_works(p: Pman, **overrides: Any) -> None:
    body = p.body(cpu_limit=100, **overrides)
    assert p.post(body).status_code == 201
    data = p.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    assert (p.out(body) / "out-data.txt").read_text() == "some data\n"
    assert "input read-only" in (p.out(body) / "report.txt").read_text()


@pytest.mark.parametrize("backend_name", CONFINED)
def test_jobs_run_without_capabilities_and_cannot_gain_privileges(
    make_pman: Callable[..., Pman], backend_name: str
) -> None:
    p = make_pman(backend_name)
    found = probe(p)
    assert found["CapEff"] == found["CapPrm"] == found["CapBnd"] == "0000000000000000", found
    # Docker 20.10's service API has no NoNewPrivileges (README)
    assert found["NoNewPrivs"] == ("0" if backend_name == "swarm" else "1"), found
    assert (found["Root"], found["Tmp"]) == ("rw", "rw"), found
    copy_job_works(p)  # as root, without CAP_DAC_OVERRIDE: its own folders suffice


@pytest.mark.parametrize("backend_name", CONFINED)
def test_added_capabilities_and_a_read_only_root(
    make_pman: Callable[..., Pman], backend_name: str
) -> None:
    p = make_pman(backend_name, PMAN_CAP_ADD="NET_BIND_SERVICE,kill", PMAN_READ_ONLY_ROOTFS="yes")
    found = probe(p)
    # CAP_KILL is bit 5, CAP_NET_BIND_SERVICE bit 10
    assert found["CapEff"] == found["CapBnd"] == f"{(1 << 5) | (1 << 10):016x}", found
    assert (found["Root"], found["Tmp"]) == ("ro", "rw"), found
    copy_job_works(p)
    # and as another user, as CONTAINER_USER says (output folder made writable for it)
    (p.storebase / "key-1" / "user-out").mkdir(mode=0o777)
    (p.storebase / "key-1" / "user-out").chmod(0o777)
    q = make_pman(
        backend_name, storebase=p.storebase, CONTAINER_USER="1234:1234", PMAN_READ_ONLY_ROOTFS="yes"
    )
    body = q.body(cpu_limit=100, output_dir="key-1/user-out")
    assert q.post(body).status_code == 201
    data = q.wait(body["jid"])
    assert data["status"] == "finishedSuccessfully", data
    assert "uid=1234 gid=1234" in data["logs"]
