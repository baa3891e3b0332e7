"""The local backend's cgroup plans, on fake cgroup folders
(tests/integration/test_local_sandbox.py enforces them)."""

from __future__ import annotations

from pathlib import Path

from pman.backends.local import cgroup as local_cgroup


def _fake_v2(root: Path) -> Path:
    """The files of a cgroup v2 root that detect() reads and writes."""
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    (root / "pman").mkdir()
    (root / "pman" / "cgroup.subtree_control").write_text("")
    return root


def test_cgroup_v2_limits(tmp_path: Path) -> None:
    root = _fake_v2(tmp_path / "cg")
    support = local_cgroup.detect(root)
    assert (support.version, support.problems) == (2, {})
    assert support.parents == {"memory": root / "pman", "cpu": root / "pman"}
    # handed down to pman's folder (a plain file keeps only the last "+cpu"
    # written; the kernel's adds each); the root had them already
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory\n"
    assert (root / "pman" / "cgroup.subtree_control").read_text() == "+cpu"
    cg = local_cgroup.plan(support, "job-1", memory_mib=96, cpu_millicores=500)
    assert cg is not None
    job = root / "pman" / "job-1"
    local_cgroup.create(cg)
    assert (job / "memory.max").read_text() == str(96 << 20)
    assert (job / "cpu.max").read_text() == "50000 100000"
    assert local_cgroup.oom_kills(cg) == 0
    (job / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert local_cgroup.oom_kills(cg) == 1
    assert "cgroup v2" in support.describe("memory")


def test_cpu_quota_and_what_is_not_enforced(tmp_path: Path) -> None:
    support = local_cgroup.CgroupSupport(
        1, {"cpu": Path("/sys/fs/cgroup/cpu/pman")}, {"memory": "no memory hierarchy"}
    )
    cg = local_cgroup.plan(support, "j", memory_mib=64, cpu_millicores=1)
    assert cg is not None
    # 1 millicore is below the kernel's smallest quota (1 ms of every 100 ms)
    assert (cg["cpu_quota_us"], cg["memory_bytes"]) == (1000, None)
    assert local_cgroup.plan(support, "j", 64, 2500)["cpu_quota_us"] == 250000  # type: ignore[index]
    assert support.describe("memory") == "memory_limit NOT enforced (no memory hierarchy)"
    assert local_cgroup.plan(local_cgroup.CgroupSupport(), "j", 64, 1000) is None
    # no cgroup v2 root and no v1 mounts at all
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    found = local_cgroup.detect(tmp_path / "none", mounts)
    assert found.parents == {} and set(found.problems) == {"memory", "cpu"}
