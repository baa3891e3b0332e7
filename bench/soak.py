#!/usr/bin/env python3
"""Soak: 16 clients submit, poll and delete jobs against `pman serve` on the
docker backend for a bounded time.

    python bench/soak.py [--seconds 600] [--clients 16] [--memory-tolerance 0.25]

Each client loops: POST a trivial job (the test image's copyplugin), poll it
until it has finished, check it succeeded, DELETE it. Meanwhile the resident
memory of pman's processes (server, workers, tracker) is sampled. At the end
it prints JSON: requests by kind, errors by kind (4xx: the client's fault;
5xx: the server's; connection errors), p50/p99 latencies, memory samples, and
the containers of this pman instance left on the engine.

Exits 1 when there was any 5xx, connection error or failed job, when a
container is left behind, or when memory grew: the mean of the last third of
the samples more than ``--memory-tolerance`` above the first third's.
Needs Docker and the test image (scripts/engines-up.sh,
scripts/build-test-images.sh); talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "faults"))

from common import (  # noqa: E402
    FINISHED,
    body,
    containers_of,
    docker_answers,
    instance_of,
    new_dirs,
    remove_containers_of,
    start_pman,
)

KINDS = ("POST", "GET", "DELETE")


def pct(samples: list[float], p: float) -> float | None:
    if not samples:
        return None
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(len(s) * p / 100))] * 1000, 1)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self.jobs: collections.Counter[str] = collections.Counter()

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latency[kind].append(seconds)

    def error(self, what: str, example: str) -> None:
        with self.lock:
            self.errors[what] += 1
            self.examples.setdefault(what, example[:300])


def classify(status: int) -> str:
    return "client_4xx" if 400 <= status < 500 else "server_5xx"


def client(url: str, headers: dict[str, str], stop: float, stats: Stats) -> None:
    s = requests.Session()
    s.headers.update(headers)

    def call(kind: str, method: str, path: str, **kw: Any) -> requests.Response | None:
        t = time.perf_counter()
        try:
            r = s.request(method, f"{url}{path}", timeout=120, **kw)
        except requests.RequestException as e:
            stats.error("connection", f"{method} {path}: {e!r}")
            return None
        stats.add(kind, time.perf_counter() - t)
        return r

    while time.monotonic() < stop:
        b = body("copyplugin", jid=f"soak-{uuid.uuid4().hex[:12]}")
        r = call("POST", "POST", "/api/v1/", json=b)
        if r is None or r.status_code != 201:
            if r is not None:
                stats.error(classify(r.status_code), f"POST {r.status_code} {r.text}")
            time.sleep(0.5)
            continue
        jid = b["jid"]
        status = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = call("GET", "GET", f"/api/v1/{jid}/")
            if r is not None and r.status_code == 200:
                status = r.json()["status"]
                if status in FINISHED:
                    break
            elif r is not None:
                stats.error(classify(r.status_code), f"GET {r.status_code} {r.text}")
            time.sleep(0.2)
        with stats.lock:
            stats.jobs[status or "no answer"] += 1
        if status != "finishedSuccessfully":
            stats.error("job_not_successful", f"{jid}: {status}")
        r = call("DELETE", "DELETE", f"/api/v1/{jid}/")
        if r is not None and r.status_code != 204:
            stats.error(classify(r.status_code), f"DELETE {r.status_code} {r.text}")


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--memory-tolerance", type=float, default=0.25)
    args = parser.parse_args(argv)
    if not docker_answers():
        print("docker does not answer: run scripts/engines-up.sh", file=sys.stderr)
        return 2
    storebase, data = new_dirs("soak")
    pman = start_pman(storebase, data)
    stats = Stats()
    samples: list[tuple[float, float]] = []
    figures: dict[str, Any] = {"seconds": args.seconds, "clients": args.clients}
    instance = ""
    try:
        instance = instance_of(pman)
        started = time.monotonic()
        stop = started + args.seconds
        threads = [
            threading.Thread(target=client, args=(pman.url, pman.headers, stop, stats), daemon=True)
            for _ in range(args.clients)
        ]
        for t in threads:
            t.start()
        while time.monotonic() < stop:
            samples.append((round(time.monotonic() - started, 1), rss_mib(pman.pids())))
            time.sleep(min(args.sample_every, max(0.0, stop - time.monotonic())))
        for t in threads:
            t.join(timeout=180)
        elapsed = time.monotonic() - started
        samples.append((round(elapsed, 1), rss_mib(pman.pids())))
        left = containers_of(instance)
        records = pman.jobs(include_deleted=False)
        third = max(1, len(samples) // 3)
        first = sum(m for _, m in samples[:third]) / third
        last = sum(m for _, m in samples[-third:]) / third
        growth = (last - first) / first if first else 0.0
        requests_total = sum(len(v) for v in stats.latency.values())
        figures.update(
            {
                "elapsed_s": round(elapsed, 1),
                "requests": {k: len(v) for k, v in stats.latency.items()},
                "requests_total": requests_total,
                "requests_per_s": round(requests_total / elapsed, 1),
                "jobs": dict(stats.jobs),
                "errors": dict(stats.errors),
                "error_examples": stats.examples,
                "latency_ms": {
                    k: {"p50": pct(v, 50), "p99": pct(v, 99), "max": pct(v, 100)}
                    for k, v in stats.latency.items()
                },
                "rss_mib": {
                    "processes": len(pman.pids()),
                    "first_third_mean": round(first, 1),
                    "last_third_mean": round(last, 1),
                    "growth_pct": round(growth * 100, 1),
                    "max": max(m for _, m in samples),
                    "samples": samples,
                },
                "leaked_containers": [c["Names"][0] for c in left],
                "active_records_left": len(records),
            }
        )
    finally:
        pman.stop()
        if instance:
            remove_containers_of(instance)
    problems = []
    for kind in ("server_5xx", "connection", "job_not_successful"):
        if stats.errors.get(kind):
            problems.append(f"{stats.errors[kind]} {kind}")
    if figures.get("leaked_containers"):
        problems.append(f"{len(figures['leaked_containers'])} containers left")
    if figures.get("active_records_left"):
        problems.append(f"{figures['active_records_left']} jobs not deleted")
    rss = figures.get("rss_mib", {})
    if rss and rss["growth_pct"] > args.memory_tolerance * 100:
        problems.append(f"memory grew {rss['growth_pct']}% (first third to last third)")
    if not figures.get("requests_total"):
        problems.append("no requests made")
    figures["problems"] = problems
    figures["ok"] = not problems
    print(json.dumps(figures, indent=2))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
