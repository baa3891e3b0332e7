"""``pman doctor`` for a SLURM resource: SLURM's commands are there, the
controller answers, SLURM_JOB_DIR and STOREBASE are folders pman can write
and, with ``--submit-test`` only, a tiny batch job proves that a compute
node sees both at the same paths (it reads what pman wrote, pman reads what
it wrote back); the job and its files are removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pman.backends.kit.doctor import (
    Check,
    DoctorContext,
    Finding,
    folder_checks,
    ok,
    problem,
    skipped,
)
from pman.backends.slurm.client import SlurmClient, parse_sbatch
from pman.backends.slurm.config import SlurmConfig, from_resource
from pman.backends.slurm.runner import LocalRunner, SlurmCommandError

#: every SLURM command pman runs (pman.backends.slurm.client)
TOOLS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
#: seconds the test job may take from sbatch to its files read back
SUBMIT_TEST_SECONDS = 90.0


def checks(context: DoctorContext) -> list[Check]:
    config = from_resource(context.resource, context.core, context.instance)
    runner = LocalRunner(
        bin_dir=config.bin_dir,
        timeout=min(config.engine_timeout, context.timeout),
        conf=config.conf,
    )
    bin_var = context.name_of("SLURM_BIN_DIR")
    job_dir_var = context.name_of("SLURM_JOB_DIR")
    found = [
        Check("commands", lambda: [commands(config, bin_var)]),
        Check("controller", lambda: [controller(runner)], needs="commands"),
        *folder_checks(
            [
                (job_dir_var, config.job_dir, ""),
                (context.name_of("STOREBASE"), config.storebase, "jobs are given no STOREBASE"),
            ],
            made_by_pman=[job_dir_var],
        ),
    ]
    if not context.submit_test:
        found.append(
            Check(
                "test job",
                lambda: [
                    skipped(
                        "test job",
                        "not submitted: `pman doctor --submit-test` runs a tiny batch job that "
                        "proves a compute node sees SLURM_JOB_DIR and STOREBASE at the same paths",
                    )
                ],
            )
        )
    else:
        found.append(
            Check(
                "test job",
                lambda: [test_job(config, SlurmClient(runner), context.name_of)],
                needs="controller",
                timeout=SUBMIT_TEST_SECONDS + 30,
                hang_fix="check that the partition has idle nodes (`sinfo`) and the controller "
                "answers",
            )
        )
    return found


def commands(config: SlurmConfig, variable: str) -> Finding:
    search = str(config.bin_dir) if config.bin_dir else os.environ.get("PATH", "")
    where = f"{variable}={config.bin_dir}" if config.bin_dir else "PATH"
    missing = [tool for tool in TOOLS if shutil.which(tool, path=search) is None]
    if missing:
        return problem(
            "commands",
            f"not found in {where}: {', '.join(missing)}",
            f"install SLURM's client commands on this machine (Debian: slurm-client) with the "
            f"cluster's slurm.conf, or set {variable} to the folder that has them",
        )
    found = shutil.which("sbatch", path=search)
    return ok("commands", f"{', '.join(TOOLS)} found in {Path(str(found)).parent}")


def controller(runner: LocalRunner) -> Finding:
    fix = (
        "start slurmctld (`systemctl start slurmctld`), or point SLURM_CONF at the cluster's "
        "slurm.conf; `scontrol ping` must say UP"
    )
    try:
        answer = runner.run(["scontrol", "ping"]).stdout.strip()
    except SlurmCommandError as e:
        return problem("controller", f"the controller does not answer: {e}", fix)
    if "UP" not in answer:
        return problem("controller", f"the controller is not up: {answer}", fix)
    try:
        version = runner.run(["sbatch", "--version"]).stdout.strip()
    except SlurmCommandError as e:
        version = f"version unknown ({e})"
    return ok("controller", f"{answer} ({version})")


def _script(token: str, folders: dict[str, Path]) -> str:
    lines = ["#!/bin/sh", "# pman doctor --submit-test: what a compute node sees"]
    for variable, folder in folders.items():
        mine = shlex.quote(str(folder / f".pman-doctor-{token}.pman"))
        node = shlex.quote(str(folder / f".pman-doctor-{token}.node"))
        lines += [
            f'if [ "$(cat {mine} 2>/dev/null)" = {token} ]; then seen=yes; else seen=no; fi',
            f'echo "$seen $(hostname)" > {node} || echo "cannot write {variable}"',
        ]
    return "\n".join([*lines, ""])


def test_job(config: SlurmConfig, client: SlurmClient, names: Callable[[str], str]) -> Finding:
    """Submit the probe, wait for its answers, clean up."""
    token = uuid.uuid4().hex
    probe_dir = config.job_dir / f".pman-doctor-{token[:12]}"
    folders = {names("SLURM_JOB_DIR"): probe_dir}
    if config.storebase is not None:
        folders[names("STOREBASE")] = config.storebase
    written: list[Path] = []
    job_id = ""
    try:
        probe_dir.mkdir(parents=True)  # SLURM_JOB_DIR too, as pman makes it
        for folder in folders.values():
            mine = folder / f".pman-doctor-{token}.pman"
            mine.write_text(token)
            written += [mine, folder / f".pman-doctor-{token}.node"]
        script = probe_dir / "probe.sh"
        script.write_text(_script(token, folders))
        options = [
            "--job-name=pman-doctor",
            f"--output={probe_dir / 'out.txt'}",
            f"--chdir={probe_dir}",
            "--time=1",
            "--ntasks=1",
        ]
        for flag, value in (
            ("partition", config.partition),
            ("account", config.account),
            ("qos", config.qos),
        ):
            if value:
                options.append(f"--{flag}={value}")
        try:
            job_id = parse_sbatch(
                client.runner.run(
                    ["sbatch", "--parsable", *options, *config.extra_options, str(script)]
                ).stdout
            )
        except (SlurmCommandError, ValueError) as e:
            return problem(
                "test job",
                f"sbatch refused the test job: {e}",
                "check SLURM_PARTITION, SLURM_ACCOUNT, SLURM_QOS and SLURM_EXTRA_OPTIONS "
                "(`sbatch --test-only` with them)",
            )
        return _wait(client, job_id, folders, token)
    except OSError as e:
        return problem(
            "test job",
            f"cannot write the test job's files: {e}",
            "make SLURM_JOB_DIR and STOREBASE writable by pman (see their rows)",
        )
    finally:
        if job_id:
            with contextlib.suppress(SlurmCommandError):
                client.scancel(job_id)
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        shutil.rmtree(probe_dir, ignore_errors=True)


def _wait(client: SlurmClient, job_id: str, folders: dict[str, Path], token: str) -> Finding:
    nodes = {v: f / f".pman-doctor-{token}.node" for v, f in folders.items()}
    deadline = time.monotonic() + SUBMIT_TEST_SECONDS
    state, reason = "?", ""
    while time.monotonic() < deadline:
        answers = {v: _read(p) for v, p in nodes.items()}
        if all(answers.values()):
            return _verdict(job_id, answers)
        rows = client.squeue(all_states=True, job_id=job_id)
        if rows:
            state, reason = rows[0].state, rows[0].reason
            if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                time.sleep(0.5)  # its last file may lag behind its end on NFS
                answers = {v: _read(p) for v, p in nodes.items()}
                if all(answers.values()):
                    return _verdict(job_id, answers)
                unseen = [v for v, a in answers.items() if not a]
                return problem(
                    "test job",
                    f"test job {job_id} ended {state} without writing into "
                    f"{', '.join(unseen)}: a compute node does not see "
                    f"{' and '.join(f'{v}={folders[v]}' for v in unseen)}",
                    "mount the shared filesystem at the same path on every compute node "
                    "(and writable by pman's user there)",
                )
        time.sleep(0.5)
    return problem(
        "test job",
        f"test job {job_id} did not finish within {SUBMIT_TEST_SECONDS:.0f} s "
        f"(state {state}{', reason ' + reason if reason and reason != 'None' else ''}); "
        "it was cancelled",
        "check that the partition has idle nodes (`sinfo`), and SLURM_PARTITION, "
        "SLURM_ACCOUNT, SLURM_QOS",
    )


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return ""


def _verdict(job_id: str, answers: dict[str, str]) -> Finding:
    unseen = [v for v, a in answers.items() if not a.startswith("yes ")]
    host = next(iter(answers.values())).split(" ", 1)[-1]
    if unseen:
        return problem(
            "test job",
            f"on node {host}, test job {job_id} did not find pman's file in "
            f"{', '.join(unseen)}: the node sees another folder at that path",
            "mount the same shared filesystem at the same path on pman's machine and every "
            "compute node",
        )
    return ok(
        "test job",
        f"test job {job_id} on node {host} read and wrote {' and '.join(answers)} "
        "at the same paths as pman",
    )
