"""``pman doctor`` for a local resource: the sandbox it runs jobs in (bwrap,
its version, a sandbox that starts as jobs' would) and the folders pman
writes (its job folders under PMAN_DATA_DIR, STOREBASE)."""

from __future__ import annotations

import subprocess

from pman.backends.kit.doctor import Check, DoctorContext, Finding, folder_checks, ok, problem
from pman.backends.local.config import LocalConfig
from pman.backends.local.sandbox import find_bwrap, probe, resolve_user


def checks(context: DoctorContext) -> list[Check]:
    config = LocalConfig.from_resource(context.resource, context.core)
    user_var = context.name_of("PMAN_LOCAL_USER")
    return [
        Check(
            "engine",
            lambda: [sandbox(config, user_var, context.timeout)],
            hang_fix="bwrap did not start a sandbox in time: check the machine's load",
        ),
        *folder_checks(
            [
                ("PMAN_DATA_DIR", config.data_dir, ""),
                (context.name_of("STOREBASE"), config.storebase, "jobs are given no STOREBASE"),
            ],
            made_by_pman=["PMAN_DATA_DIR"],
        ),
    ]


def sandbox(config: LocalConfig, user_var: str, timeout: float) -> Finding:
    bwrap = find_bwrap()
    if bwrap is None:
        return problem(
            "engine",
            "bwrap (bubblewrap) is not installed: the local backend runs every job in its sandbox",
            "apt-get install bubblewrap",
        )
    try:
        user = resolve_user(config.user)
    except ValueError as e:
        return problem("engine", f"{user_var}: {e}", f"set {user_var} to a user jobs may run as")
    version = subprocess.run(
        [bwrap, "--version"], capture_output=True, text=True, timeout=timeout, check=False
    ).stdout.strip()
    failure = probe(bwrap, user, timeout=timeout)
    if failure is not None:
        return problem(
            "engine",
            f"{bwrap} cannot start a job sandbox as {user}: {failure}",
            "allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0, and "
            "kernel.unprivileged_userns_clone=1 where the kernel has it)",
        )
    return ok("engine", f"{version or bwrap} starts job sandboxes as {user}")
