#!/usr/bin/env python3
"""Fault: pman gets SIGTERM while requests are in flight.

    python scripts/faults/sigterm_inflight.py [--requests 16] [--backend docker]

Starts `pman serve`, sends ``--requests`` POSTs at once (each waits on the
engine: a Docker create and start takes a few hundred ms), and sends SIGTERM
to pman (the `pman serve` process, as a service manager or `docker stop`
would) while they are in flight. Every request sent before the signal must
get a complete answer (201; no connection reset, no empty reply), then pman
must exit, with status 0, within its workers' grace period; afterwards every
201 job is in the registry (pman started again on it) and no container of
the instance is left without a record.

Prints JSON figures; exits 1 on a violated invariant, 2 if it could not run.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Violation,
    body,
    check,
    containers_of,
    docker_answers,
    instance_of,
    new_dirs,
    remove_containers_of,
    report,
    start_pman,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--backend", choices=("docker", "local"), default="docker")
    parser.add_argument("--delay", type=float, default=0.15, help="seconds from sending to SIGTERM")
    args = parser.parse_args(argv)
    if args.backend == "docker" and not docker_answers():
        print("docker does not answer: run scripts/engines-up.sh", file=sys.stderr)
        return 2
    violations: list[str] = []
    figures: dict[str, Any] = {
        "fault": "SIGTERM with requests in flight",
        "requests": args.requests,
    }
    storebase, data = new_dirs("sigterm")
    extra = {
        "PATH": f"{Path(__file__).resolve().parents[2] / 'tests/images/plugin/bin'}:/usr/bin:/bin"
    }
    pman = start_pman(storebase, data, backend=args.backend, **extra)
    token = pman.token
    instance = ""
    bodies = [body("copyplugin") for _ in range(args.requests)]
    if args.backend == "local":
        for b in bodies:  # the local backend runs the plugin from the host
            b["args"] = ["--sleep", "0"]
    outcomes: dict[str, str] = {}
    latencies: list[float] = []
    go = threading.Barrier(args.requests + 1)

    def send(b: dict[str, Any]) -> None:
        go.wait()
        t = time.perf_counter()
        try:
            r = requests.post(f"{pman.url}/api/v1/", json=b, headers=pman.headers, timeout=120)
            outcomes[b["jid"]] = str(r.status_code)
        except requests.RequestException as e:
            outcomes[b["jid"]] = type(e).__name__
        latencies.append(time.perf_counter() - t)

    try:
        threads = [threading.Thread(target=send, args=(b,), daemon=True) for b in bodies]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(args.delay)
        signalled = time.monotonic()
        processes = pman.pids()
        pman.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        try:
            code = pman.proc.wait(timeout=90)
        except Exception:
            code = None
        figures["exit_s"] = round(time.monotonic() - signalled, 2)
        figures["exit_code"] = code
        figures["answers"] = dict(collections.Counter(outcomes.values()))
        figures["slowest_request_s"] = round(max(latencies), 2) if latencies else None
        check(code == 0, f"pman exited with {code} after SIGTERM", violations)
        bad = {j: o for j, o in outcomes.items() if o != "201"}
        check(not bad, f"in-flight requests without a 201: {bad}", violations)
        check(
            len(outcomes) == args.requests,
            f"answers: {len(outcomes)} of {args.requests}",
            violations,
        )
        # the tracker process follows its parent within a second or two
        deadline = time.monotonic() + 10
        while (left := [p for p in processes if Path(f"/proc/{p}").exists()]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        figures["processes"] = len(processes)
        check(not left, f"pman processes left after exit: {left}", violations)

        # ------------------------------------------------ the registry has every 201 job
        pman = start_pman(storebase, data, backend=args.backend, token=token, **extra)
        records = {r["jid"]: r for r in pman.jobs()}
        missing = [j for j, o in outcomes.items() if o == "201" and j not in records]
        check(not missing, f"201 jobs without a record: {missing}", violations)
        if args.backend == "docker":
            instance = instance_of(pman)
            strays = {c["Names"][0].lstrip("/") for c in containers_of(instance)} - set(records)
            check(not strays, f"containers without a record: {strays}", violations)
        for jid in records:
            pman.delete(jid)
    except Violation as e:
        check(False, str(e), violations)
    finally:
        pman.stop()
        if instance:
            figures["containers_left_removed"] = remove_containers_of(instance)
    return report(figures, violations)


if __name__ == "__main__":
    sys.exit(main())
