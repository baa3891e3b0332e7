#!/usr/bin/env python3
"""Availability benchmark: do polls keep their speed while work that may
wait holds everything it may hold? Figures, in one run, against an
undisturbed baseline of the same pman.

Starts `pman serve` (granian, 2 workers, as deployed) on Docker, finishes a
few jobs, then measures GET polls of those finished jobs with wrk (16
connections) in each situation and prints JSON:

  * baseline: nothing else going on;
  * streams: 200 `follow=true` log streams open on silent jobs; then as many
    more as it takes to reach the cap, and how long a refused one took;
  * trickle: 100 connections that announce a 100 kB body and send 10 bytes
    of it; when their 408s came;
  * stall: dockerd stopped with SIGSTOP and 50 POSTs waiting on it; how long
    each POST took to be answered (503 by PMAN_ENGINE_TIMEOUT), then, after
    SIGCONT, whether every refused POST left nothing behind and, sent again,
    ran exactly once.

    python bench/availability.py [--seconds 10] [--streams 200] [--trickle 100]
                                 [--posts 50] [--engine-timeout 15] [--no-stall]

Nothing here asserts. It stops the machine's dockerd for about
--engine-timeout seconds: run it where nothing else uses that engine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import IMAGE, SOCKETS, TOKEN, Pman, job, pct, run_wrk, session  # noqa: E402

DOCKER_PID_FILE = Path("/var/run/docker.pid")


def copy_job(jid: str) -> dict[str, Any]:
    """A short job that copies its input to its output (its output proves it ran)."""
    return {**job(jid), "args": [], "entrypoint": ["copyplugin"], "type": "ds"}


def wait_finished(url: str, jids: list[str], timeout: float = 180) -> dict[str, str]:
    http = session()
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    for jid in jids:
        while True:
            states[jid] = http.get(f"{url}/api/v1/{jid}/", timeout=30).json()["status"]
            if states[jid].startswith("finished") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return states


def open_stream(url: str, jid: str) -> tuple[socket.socket | None, int, float]:
    """A raw follow=true request: the socket (kept open), its status, and how
    long the status line took."""
    u = urlparse(url)
    t = time.perf_counter()
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall(
        (
            f"GET /api/v1/{jid}/logs/?follow=true HTTP/1.1\r\nHost: {u.netloc}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    took = time.perf_counter() - t
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if status != 200:
        s.close()
        return None, status, took
    return s, status, took


def trickle(url: str, n: int) -> list[tuple[socket.socket, float]]:
    u = urlparse(url)
    socks = []
    for _ in range(n):
        s = socket.create_connection((u.hostname, u.port), timeout=120)
        s.sendall(
            (
                f"POST /api/v1/ HTTP/1.1\r\nHost: {u.netloc}\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                'Content-Length: 100000\r\n\r\n{"jid": "x'
            ).encode()
        )
        socks.append((s, time.monotonic()))
    return socks


def wrk_vs(baseline: dict[str, Any] | None, run: dict[str, Any] | None) -> dict[str, Any]:
    if not run or not baseline:
        return {"wrk": run}
    return {"wrk": run, "throughput_vs_baseline": round(run["per_s"] / baseline["per_s"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--trickle", type=int, default=100)
    parser.add_argument("--posts", type=int, default=50)
    parser.add_argument("--engine-timeout", type=float, default=15.0)
    parser.add_argument("--no-stall", action="store_true", help="leave dockerd alone")
    args = parser.parse_args()

    api = docker.APIClient(base_url=SOCKETS["docker"], version="1.41", timeout=60)
    per_worker_cap = 150
    os.environ.update(
        {
            "PMAN_ENGINE_TIMEOUT": str(args.engine_timeout),
            "PMAN_MAX_LOG_STREAMS": str(per_worker_cap),
            "PMAN_MAX_LOG_STREAMS_PER_CLIENT": str(per_worker_cap),
            "PMAN_BODY_TIMEOUT": str(args.seconds * 2),
            "PMAN_TRACKER_INTERVAL": "0.5",
        }
    )
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "pman": {
            "workers": 2,
            "PMAN_THREADS": 4,
            "PMAN_MAX_ENGINE_CALLS": 8,
            "PMAN_MAX_LOG_STREAMS": per_worker_cap,
            "PMAN_ENGINE_TIMEOUT": args.engine_timeout,
            "PMAN_BODY_TIMEOUT": args.seconds * 2,
        },
    }
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pman-bench-avail-") as tmp:
        pman = Pman("docker", Path(tmp), workers=2, threads=4)
        http = session()
        _until_answering(pman.url)
        try:
            # ---- finished jobs to poll, silent jobs to stream
            done = [f"avail-done-{uuid.uuid4().hex[:6]}-{i}" for i in range(10)]
            silent = [f"avail-silent-{uuid.uuid4().hex[:6]}-{i}" for i in range(4)]
            for jid in done:
                http.post(f"{pman.url}/api/v1/", json=copy_job(jid), timeout=60)
            for jid in silent:
                http.post(f"{pman.url}/api/v1/", json=job(jid, 3600), timeout=60)
            made += done + silent
            wait_finished(pman.url, done)
            out["baseline"] = run_wrk(pman.url, done, args.seconds)

            # ---- open log streams on silent jobs
            streams: list[socket.socket] = []
            opened: list[float] = []
            statuses: dict[int, int] = {}
            for i in range(args.streams):
                s, status, took = open_stream(pman.url, silent[i % len(silent)])
                statuses[status] = statuses.get(status, 0) + 1
                opened.append(took)
                if s is not None:
                    streams.append(s)
            run = run_wrk(pman.url, done, args.seconds)
            # then more, until both workers are at their cap
            refused: list[float] = []
            extra: list[socket.socket] = []
            for i in range(2 * per_worker_cap - len(streams) + 50):
                s, status, took = open_stream(pman.url, silent[i % len(silent)])
                if s is None:
                    refused.append(took)
                    statuses[status] = statuses.get(status, 0) + 1
                else:
                    extra.append(s)
            out["streams"] = {
                "open_during_wrk": len(streams),
                "statuses_seen": statuses,
                "open_p99_ms": pct(opened, 99),
                **wrk_vs(out["baseline"], run),
                "open_at_cap": len(streams) + len(extra),
                "refused": len(refused),
                "refused_p50_ms": pct(refused, 50) if refused else None,
                "refused_max_ms": round(max(refused) * 1000, 3) if refused else None,
            }
            for s in streams + extra:
                s.close()

            # ---- slow request bodies
            socks = trickle(pman.url, args.trickle)
            run = run_wrk(pman.url, done, args.seconds)
            answered: list[float] = []
            codes: dict[str, int] = {}
            for s, started in socks:
                head = b""
                with contextlib.suppress(OSError):
                    while chunk := s.recv(65536):
                        head += chunk
                answered.append(time.monotonic() - started)
                code = head[9:12].decode() or "closed"
                codes[code] = codes.get(code, 0) + 1
                s.close()
            out["trickle"] = {
                "connections": args.trickle,
                **wrk_vs(out["baseline"], run),
                "answers": codes,
                "answered_after_s": {
                    "min": round(min(answered), 2),
                    "max": round(max(answered), 2),
                },
            }

            # ---- a stalled engine
            if not args.no_stall:
                out["stall"] = stall(pman.url, api, done, args, made)
                polls = out["stall"].pop("polls_during_stall", None)
                out["stall"]["polls_during_stall"] = wrk_vs(out["baseline"], polls)
            out["rss_mib_worst_worker"] = pman.rss_mib()
        finally:
            pid = _dockerd_pid()
            if pid:
                os.kill(pid, signal.SIGCONT)
            for jid in made:
                with contextlib.suppress(Exception):
                    http.delete(f"{pman.url}/api/v1/{jid}/", timeout=60)
            pman.stop()
            for jid in made:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(jid, force=True)
    print(json.dumps(out, indent=2))


def _until_answering(url: str) -> None:
    """A worker says it started a moment before its socket takes connections."""
    u = urlparse(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection((u.hostname, u.port), timeout=5).close()
            return
        time.sleep(0.05)


def _dockerd_pid() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(DOCKER_PID_FILE.read_text().strip())
    return None


def stall(
    url: str, api: docker.APIClient, done: list[str], args: argparse.Namespace, made: list[str]
) -> dict[str, Any]:
    pid = _dockerd_pid()
    if pid is None:
        return {"skipped": f"no dockerd pid in {DOCKER_PID_FILE}"}
    jids = [f"avail-stall-{uuid.uuid4().hex[:6]}-{i}" for i in range(args.posts)]
    made += jids

    def post(jid: str) -> tuple[int, float]:
        t = time.perf_counter()
        resp = session().post(f"{url}/api/v1/", json=copy_job(jid), timeout=120)
        return resp.status_code, time.perf_counter() - t

    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(args.posts) as pool:
            futures = [pool.submit(post, jid) for jid in jids]
            time.sleep(0.5)  # let them all reach pman
            # polls while every engine slot waits (shorter than the engine timeout)
            run = run_wrk(url, done, max(1, min(args.seconds, int(args.engine_timeout) - 3)))
            answers = [f.result() for f in futures]
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    codes: dict[int, int] = {}
    for status, _ in answers:
        codes[status] = codes.get(status, 0) + 1
    took = [t for _, t in answers]
    refused = [jid for jid, (status, _) in zip(jids, answers, strict=True) if status == 503]

    # the engine carries out what it was sent meanwhile; pman removes what its
    # refused POSTs made, then the same POSTs again run each job once
    def exists(jid: str) -> bool:
        try:
            api.inspect_container(jid)
        except docker.errors.NotFound:
            return False
        return True

    deadline = time.monotonic() + 180
    while any(exists(j) for j in refused) and time.monotonic() < deadline:
        time.sleep(0.5)
    left_behind = sum(exists(j) for j in refused)
    cleaned_after = round(time.monotonic() - resumed, 1)
    retries = 0
    http = session()
    for jid in refused:
        while time.monotonic() < deadline:
            resp = http.post(f"{url}/api/v1/", json=copy_job(jid), timeout=120)
            if resp.status_code != 503:
                break
            retries += 1
            time.sleep(float(resp.headers.get("Retry-After", "1")))
    states = wait_finished(url, jids)
    names = [c["Names"][0].lstrip("/") for c in api.containers(all=True)]
    per_job = {jid: names.count(jid) for jid in jids}
    return {
        "posts": args.posts,
        "answers": codes,
        "answered_within_s": {
            "p50": round(pct(took, 50) / 1000, 2),
            "max": round(max(took), 2),
            "engine_timeout": args.engine_timeout,
        },
        "polls_during_stall": run,
        "after_sigcont": {
            "refused_posts_leaving_a_container": left_behind,
            "cleaned_within_s": cleaned_after,
            "retries_answered_503_while_withdrawing": retries,
            "jobs_finished_successfully": sum(s == "finishedSuccessfully" for s in states.values()),
            "jobs_lost": sum(not s.startswith("finished") for s in states.values()),
            "jobs_with_more_than_one_container": sum(n > 1 for n in per_job.values()),
        },
        "image": IMAGE,
    }


if __name__ == "__main__":
    main()
