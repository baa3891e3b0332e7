#!/usr/bin/env python3
"""Fault: the Docker engine is killed and restarted while jobs run.

    python scripts/faults/engine_outage.py [--sleepers 3] [--signal TERM|KILL]

Starts `pman serve` on the docker backend, runs one job that succeeds and one
that fails, starts ``--sleepers`` jobs that sleep ``--sleep`` seconds, then
kills dockerd (SIGTERM by default, as `kill` does). During the outage: a POST
must be 503 (and leave no record), /health 503, and polls keep answering
from the registry. Then dockerd is started again (scripts/engines-up.sh) and
every job must reach a final state that matches what Docker reports of its
container (exit code 0: finishedSuccessfully; otherwise finishedWithError,
with the exit code in the message). A new job must run after. dockerd is
started again in a ``finally``, whatever happened.

What happens on this machine (Docker 20.10, live-restore off): a dockerd
stopped with SIGTERM stops every container first (SIGTERM, then SIGKILL
after the container's stop timeout: a busybox ``sh`` as PID 1 ignores
SIGTERM, so the sleepers end with exit code 137 after 10 s); one killed with
SIGKILL leaves the containers running under their shims, and the dockerd
that starts next kills them (exit code 137) since live-restore is off. Either
way the running jobs end killed and pman must say finishedWithError. The
script checks against Docker, not against this paragraph.

Prints JSON figures; exits 1 on a violated invariant, 2 if it could not run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    FINISHED,
    Violation,
    body,
    check,
    docker_answers,
    expected_status,
    inspect,
    instance_of,
    new_dirs,
    remove_containers_of,
    report,
    start_dockerd,
    start_pman,
    stop_dockerd,
    wait_until,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sleepers", type=int, default=3)
    parser.add_argument("--sleep", type=int, default=20, help="seconds each sleeper sleeps")
    parser.add_argument("--signal", choices=("TERM", "KILL"), default="TERM")
    args = parser.parse_args(argv)
    if not docker_answers():
        print("docker does not answer: run scripts/engines-up.sh", file=sys.stderr)
        return 2
    violations: list[str] = []
    figures: dict[str, Any] = {"fault": "engine outage", "signal": f"SIG{args.signal}"}
    storebase, data = new_dirs("outage")
    pman = start_pman(storebase, data)
    instance = ""
    try:
        ok, failing = body("copyplugin"), body("failplugin")
        sleepers = [body("sleeper", args=[str(args.sleep)]) for _ in range(args.sleepers)]
        jobs = [ok, failing, *sleepers]
        for b in jobs:
            resp = pman.post(b)
            check(resp.status_code == 201, f"POST {b['jid']}: {resp.status_code}", violations)
        instance = instance_of(pman)
        for b in (ok, failing):
            wait_until(
                f"{b['jid']} finishes",
                lambda b=b: pman.get(b["jid"]).json()["status"] in FINISHED,
                60,
            )
        for b in sleepers:
            wait_until(
                f"{b['jid']} runs", lambda b=b: pman.get(b["jid"]).json()["status"] == "started", 60
            )

        # ------------------------------------------------ the outage
        down_at = time.monotonic()
        figures["dockerd_stop_s"] = round(stop_dockerd(getattr(signal, f"SIG{args.signal}")), 2)
        try:
            wait_until("docker stops answering", lambda: not docker_answers(), 30)
            during = body("copyplugin")
            resp = pman.post(during, timeout=90)
            figures["post_during_outage"] = resp.status_code
            check(
                resp.status_code == 503,
                f"POST during the outage: {resp.status_code} {resp.text}",
                violations,
            )
            health = pman.request("GET", "/health")
            figures["health_during_outage"] = health.status_code
            check(
                health.status_code == 503,
                f"/health during the outage: {health.status_code}",
                violations,
            )
            polls = [pman.get(b["jid"]).status_code for b in jobs]
            figures["polls_during_outage"] = polls
            check(all(s == 200 for s in polls), f"polls during the outage: {polls}", violations)
            recorded = {j["jid"] for j in pman.jobs()}
            check(during["jid"] not in recorded, "the refused POST left a record", violations)
        finally:
            figures["dockerd_restart_s"] = round(start_dockerd(), 2)
        figures["outage_s"] = round(time.monotonic() - down_at, 2)

        # ------------------------------------------------ after: pman agrees with Docker
        check(
            pman.request("GET", "/health").status_code == 200,
            "/health after the outage",
            violations,
        )
        figures["converged_s"] = round(
            wait_until(
                "every job final in pman",
                lambda: all(pman.get(b["jid"]).json()["status"] in FINISHED for b in jobs),
                args.sleep + 90,
            ),
            2,
        )
        outcome = []
        for b in jobs:
            got = pman.get(b["jid"]).json()
            container = inspect(b["jid"])
            want = expected_status(container)
            exit_code = container["State"]["ExitCode"] if container else None
            outcome.append(
                {
                    "jid": b["jid"],
                    "plugin": b["entrypoint"][0],
                    "docker_exit_code": exit_code,
                    "pman_status": got["status"],
                    "pman_message": got["message"],
                }
            )
            check(
                got["status"] == want,
                f"{b['jid']}: pman {got['status']}, Docker {want} "
                f"({container and container['State']})",
                violations,
            )
            if exit_code not in (None, 0):
                check(
                    str(exit_code) in got["message"],
                    f"{b['jid']}: message {got['message']!r} lacks exit code {exit_code}",
                    violations,
                )
        figures["jobs"] = outcome
        after = body("copyplugin")
        check(pman.post(after).status_code == 201, "POST after the outage", violations)
        wait_until(
            "the job after the outage finishes",
            lambda: pman.get(after["jid"]).json()["status"] in FINISHED,
            60,
        )
        check(
            pman.get(after["jid"]).json()["status"] == "finishedSuccessfully",
            "the job after the outage",
            violations,
        )
        for b in [*jobs, after]:
            pman.delete(b["jid"])
    except Violation as e:
        check(False, str(e), violations)
    finally:
        if not docker_answers():
            start_dockerd()
        figures["pman_exit_code"] = pman.stop()
        if instance:
            figures["containers_left_removed"] = remove_containers_of(instance)
    return report(figures, violations)


if __name__ == "__main__":
    sys.exit(main())
