#!/usr/bin/env python3
"""Fault: pman is killed with SIGKILL during 200 concurrent submissions.

    python scripts/faults/pman_sigkill.py [--jobs 200] [--threads 32] [--kill-after 40]

Starts `pman serve` on the docker backend and submits ``--jobs`` trivial jobs
from ``--threads`` client threads at once. Once ``--kill-after`` of them were
answered 201, pman's whole process group (server, workers, tracker) is killed
with SIGKILL, the clients see what they see, and pman is started again on
the same registry. Then:

- every job answered 201 is in the registry and is followed to its end,
  which matches what Docker says of its container;
- no jid has two live records, and no record is duplicated;
- every container of this pman instance (label org.chrisproject.pman.instance)
  has a record (the tracker adopts strays at start-up);
- a job whose POST never got an answer either has a record, followed to its
  end, or has neither record nor container (one recorded before its
  container was made ends system_error "never_submitted" after the tracker's
  30 s grace).

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
    FINISHED,
    Violation,
    body,
    check,
    containers_of,
    docker_answers,
    expected_status,
    inspect,
    instance_of,
    new_dirs,
    remove_containers_of,
    report,
    start_pman,
    wait_until,
)

#: the tracker marks a record that never reached the engine after this (tracker.SUBMIT_GRACE_S)
GRACE_S = 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--kill-after", type=int, default=40, help="201 answers before SIGKILL")
    args = parser.parse_args(argv)
    if not docker_answers():
        print("docker does not answer: run scripts/engines-up.sh", file=sys.stderr)
        return 2
    violations: list[str] = []
    figures: dict[str, Any] = {"fault": "pman SIGKILL during submissions", "jobs": args.jobs}
    storebase, data = new_dirs("sigkill")
    pman = start_pman(storebase, data)
    token = pman.token
    instance = ""
    bodies = [body("copyplugin") for _ in range(args.jobs)]
    answers: dict[str, str] = {}  # jid -> "201" / "503" / "connection error" ...
    lock = threading.Lock()
    created = threading.Semaphore(0)
    todo = collections.deque(bodies)

    def client() -> None:
        with requests.Session() as s:
            while True:
                with lock:
                    if not todo:
                        return
                    b = todo.popleft()
                try:
                    r = s.post(f"{pman.url}/api/v1/", json=b, headers=pman.headers, timeout=60)
                    outcome = str(r.status_code)
                except requests.ConnectionError:
                    outcome = "connection error"
                except requests.Timeout:
                    outcome = "timeout"
                with lock:
                    answers[b["jid"]] = outcome
                if outcome == "201":
                    created.release()

    try:
        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.threads)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for _ in range(args.kill_after):
            if not created.acquire(timeout=120):
                raise Violation(f"fewer than {args.kill_after} jobs created within 120 s")
        pman.stop(signal.SIGKILL)
        figures["killed_after_s"] = round(time.monotonic() - started, 2)
        for t in threads:
            t.join(timeout=120)
        counts = collections.Counter(answers.get(b["jid"], "not sent") for b in bodies)
        figures["answers"] = dict(counts)

        # ------------------------------------------------ restart on the same registry
        pman = start_pman(storebase, data, token=token)
        instance = instance_of(pman)
        answered = [b["jid"] for b in bodies if answers.get(b["jid"]) in ("201", "200")]
        unanswered = [b["jid"] for b in bodies if answers.get(b["jid"]) not in ("201", "200")]

        def records() -> list[dict[str, Any]]:
            return pman.jobs(include_deleted=True)

        def settled() -> bool:
            recs = records()
            known = {r["jid"] for r in recs}
            on_engine = {c["Names"][0].lstrip("/") for c in containers_of(instance)}
            return (
                all(r["status"] in FINISHED for r in recs)
                and set(answered) <= known
                and on_engine <= known
            )

        try:
            figures["converged_s"] = round(
                wait_until("the registry settles", settled, GRACE_S + 90, 1.0), 2
            )
        except Violation:
            # say what did not settle: records not final, jobs or containers unrecorded
            recs = {r["jid"]: r for r in records()}
            figures["unsettled"] = {
                "records_not_final": {
                    j: [r["status"], r["state"], r["message"], (inspect(j) or {}).get("State")]
                    for j, r in recs.items()
                    if r["status"] not in FINISHED
                },
                "answered_without_record": [j for j in answered if j not in recs],
                "containers_without_record": [
                    c["Names"][0]
                    for c in containers_of(instance)
                    if c["Names"][0].lstrip("/") not in recs
                ],
            }
            raise
        recs = records()
        per_jid = collections.Counter(r["jid"] for r in recs)
        dupes = {j: n for j, n in per_jid.items() if n > 1}
        check(not dupes, f"jids with several records: {dupes}", violations)
        by_jid = {r["jid"]: r for r in recs}
        on_engine = {c["Names"][0].lstrip("/") for c in containers_of(instance)}
        check(
            on_engine <= set(by_jid),
            f"containers without a record: {sorted(on_engine - set(by_jid))}",
            violations,
        )
        for jid in answered:
            rec = by_jid.get(jid)
            if rec is None:
                check(False, f"{jid} was answered 201 but has no record", violations)
                continue
            want = expected_status(inspect(jid))
            check(
                rec["status"] == want,
                f"{jid} (answered 201): pman {rec['status']}, Docker {want}",
                violations,
            )
        outcomes: collections.Counter[str] = collections.Counter()
        for jid in unanswered:
            rec = by_jid.get(jid)
            container = inspect(jid)
            if rec is None:
                check(container is None, f"{jid} has a container but no record", violations)
                outcomes["no record, no container"] += 1
                continue
            if container is None:
                check(
                    rec["status"] == "finishedWithError",
                    f"{jid}: record {rec['status']} without a container",
                    violations,
                )
                outcomes[f"record without container: {rec['state']} {rec['reason']}"] += 1
            else:
                want = expected_status(container)
                check(
                    rec["status"] == want,
                    f"{jid} (unanswered): pman {rec['status']}, Docker {want}",
                    violations,
                )
                outcomes[f"record and container: {rec['status']}"] += 1
        figures["answered_201"] = len(answered)
        figures["answered_201_final"] = dict(
            collections.Counter(by_jid[j]["status"] for j in answered if j in by_jid)
        )
        figures["unanswered"] = dict(outcomes)
        figures["records"] = len(recs)
        figures["containers"] = len(on_engine)
        for jid in by_jid:
            pman.delete(jid)
    except Violation as e:
        check(False, str(e), violations)
    finally:
        figures["pman_exit_code"] = pman.stop()
        if instance:
            figures["containers_left_removed"] = remove_containers_of(instance)
    return report(figures, violations)


if __name__ == "__main__":
    sys.exit(main())
