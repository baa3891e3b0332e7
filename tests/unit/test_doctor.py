"""The pure parts of ``pman doctor``: the runner's bounds, the report, the clock's
arithmetic, the configuration read despite its problems, what the Kubernetes
checks ask for. (tests/integration/test_doctor.py runs it against engines.)"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from pman.backends.kit.doctor import Check, Finding, Status, ok, problem, skipped
from pman.backends.kit.doctor import writable_folder as folder
from pman.backends.kubernetes import client as kube_client
from pman.backends.kubernetes.doctor import CALLS, PERMISSIONS, Permission
from pman.doctor import configuration, report
from pman.doctor.registry import skew_finding
from pman.doctor.runner import run_groups, run_step, run_steps


def test_a_step_that_hangs_is_a_problem_within_its_time() -> None:
    release = threading.Event()
    step = Check("engine", lambda: [release.wait(60), ok("engine", "late")][1:], hang_fix="start")
    found = run_step(step, timeout=0.2)
    release.set()
    assert found == [problem("engine", "no answer within 0.2 s", "start")]


def test_a_step_that_raises_is_a_problem() -> None:
    def boom() -> list[Finding]:
        raise RuntimeError("engine said no")

    [found] = run_step(Check("engine", boom, hang_fix="fix it"), timeout=5)
    assert found.status is Status.PROBLEM
    assert found.detail.startswith("RuntimeError: engine said no (at ")
    assert found.fix == "fix it"


def test_a_step_whose_need_failed_is_skipped() -> None:
    steps = [
        Check("socket", lambda: [problem("socket", "no socket", "set DOCKER_HOST")]),
        Check("engine", lambda: [ok("engine", "never")], needs="socket"),
        Check("swarm manager", lambda: [ok("swarm manager", "never")], needs="engine"),
        Check("folder", lambda: [ok("folder", "writable")]),
    ]
    found = run_steps(steps, timeout=5)
    assert [(f.check, f.status) for f in found] == [
        ("socket", Status.PROBLEM),
        ("engine", Status.SKIPPED),
        ("swarm manager", Status.SKIPPED),
        ("folder", Status.OK),
    ]
    assert found[1].detail == "not checked: socket has a problem"


def test_groups_keep_their_order_and_name_their_resource() -> None:
    groups = [
        ("b", [Check("x", lambda: [ok("x", "1")])]),
        ("", [Check("registry", lambda: [ok("registry", "2")])]),
    ]
    found = run_groups(groups, timeout=5)
    assert [(f.resource, f.check) for f in found] == [("b", "x"), ("", "registry")]


def test_the_json_has_stable_keys() -> None:
    findings = [problem("socket", "none", "set it").of("dock"), skipped("clock", "SQLite")]
    assert json.loads(report.as_json(findings)) == [
        {
            "resource": "dock",
            "check": "socket",
            "result": "PROBLEM",
            "detail": "none",
            "fix": "set it",
        },
        {"resource": "", "check": "clock", "result": "SKIPPED", "detail": "SQLite", "fix": ""},
    ]


def test_the_table_wraps_details_and_shows_each_fix() -> None:
    findings = [
        ok("configuration", "every variable is valid"),
        problem("socket", "word " * 30, "set DOCKER_HOST " * 10).of("dock"),
    ]
    text = report.as_table(findings, width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["RESOURCE", "CHECK", "RESULT", "DETAIL"]
    assert lines[1].split()[:3] == ["-", "configuration", "OK"]
    assert lines[2].split()[:3] == ["dock", "socket", "PROBLEM"]
    assert all(len(line) <= 80 for line in lines)
    fix = [i for i, line in enumerate(lines) if line.strip().startswith("fix: ")]
    assert len(fix) == 1 and lines[fix[0] + 1].startswith(" " * 30)
    assert lines[-1] == "1 problem, 1 OK, 0 skipped"


def test_the_clock_skew_counts_from_the_middle_of_the_round_trip() -> None:
    assert skew_finding(1000.0, 999.9, 1000.1).status is Status.OK
    behind = skew_finding(1003.0, 1000.0, 1000.0)
    assert behind.status is Status.PROBLEM
    assert "3.000 s behind the database server's" in behind.detail
    assert "NTP" in behind.fix
    ahead = skew_finding(997.0, 1000.0, 1000.0)
    assert "3.000 s ahead of" in ahead.detail
    # a slow round trip makes the reading uncertain, not wrong
    assert skew_finding(1003.0, 998.0, 1002.0).status is Status.OK


def test_bad_variables_are_each_a_problem_and_the_rest_is_read(tmp_path: Path) -> None:
    environ = {
        "PMAN_DATA_DIR": str(tmp_path),
        "STOREBASE": str(tmp_path),
        "PMAN_RESOURCES": "hpc,loc",
        "HPC_CONTAINER_ENV": "slurm",
        "HPC_SLURM_PARTITION": "bad partition",
        "LOC_CONTAINER_ENV": "local",
        "PMAN_PORT": "port",
    }
    read = configuration.read(environ)
    assert [(f.resource, f.check, f.detail.split(":")[0]) for f in read.findings] == [
        ("hpc", "configuration", "HPC_SLURM_PARTITION"),
        ("", "configuration", "PMAN_PORT"),
    ]
    assert all(f.status is Status.PROBLEM and f.fix for f in read.findings)
    assert [r.name for r in read.resources] == ["loc"]
    assert read.broken == ["hpc"]
    assert read.registry is not None
    assert read.registry.database_url == f"sqlite:///{tmp_path / 'pman.db'}"


def test_a_bad_resource_list_checks_no_resource(tmp_path: Path) -> None:
    read = configuration.read({"PMAN_DATA_DIR": str(tmp_path), "PMAN_RESOURCES": "api"})
    assert read.resources == [] and read.broken == []
    assert read.findings[0].detail.startswith("PMAN_RESOURCES: 'api' is reserved")
    assert read.findings[0].fix.startswith("set PMAN_RESOURCES to comma-separated names")


def test_a_bad_database_url_skips_the_registry(tmp_path: Path) -> None:
    read = configuration.read(
        {"PMAN_DATA_DIR": str(tmp_path), "STOREBASE": "/", "PMAN_DATABASE_URL": "mysql://x"}
    )
    assert read.registry is None
    assert [r.name for r in read.resources] == ["default"]


def test_a_valid_configuration_is_one_ok(tmp_path: Path) -> None:
    read = configuration.read({"PMAN_DATA_DIR": str(tmp_path), "STOREBASE": str(tmp_path)})
    assert read.findings == [ok("configuration", "every variable is valid (resources: default)")]


def test_folders_are_written_to_not_judged_by_their_bits(tmp_path: Path) -> None:
    assert folder("f", tmp_path, "STOREBASE").status is Status.OK
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    missing = folder("f", tmp_path / "no", "STOREBASE")
    assert missing.detail == f"STOREBASE={tmp_path / 'no'} does not exist"
    assert "mkdir -p" in missing.fix
    made = folder("f", tmp_path / "a" / "b", "SLURM_JOB_DIR", made_by_pman=True)
    assert made.status is Status.OK and "pman makes it" in made.detail
    (tmp_path / "file").write_text("")
    assert folder("f", tmp_path / "file", "STOREBASE").detail.endswith("is not a folder")
    assert folder("f", None, "STOREBASE", "no STOREBASE").status is Status.SKIPPED


def test_every_kubernetes_call_of_the_backend_has_its_permission_checked() -> None:
    source = Path(kube_client.__file__).read_text()
    called = set(re.findall(r"self\.(?:batch|core)\.(\w+)", source))
    assert called == set(CALLS), "a call without its permission in doctor.CALLS"
    assert "watch=True" in source
    assert Permission("watch", "batch", "jobs") in PERMISSIONS
    assert [p.words for p in PERMISSIONS] == [
        "create jobs.batch",
        "get jobs.batch",
        "list jobs.batch",
        "patch jobs.batch",
        "delete jobs.batch",
        "list pods",
        "get pods/log",
        "watch jobs.batch",
    ]
    assert Permission("get", "", "pods/log").attributes("ns") == {
        "namespace": "ns",
        "verb": "get",
        "group": "",
        "resource": "pods",
        "subresource": "log",
    }
