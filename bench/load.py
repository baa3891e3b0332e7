#!/usr/bin/env python3
"""Load benchmark: pman against the engine it drives, in the same run.

Starts `pman serve` (gunicorn) on a chosen backend, then measures and prints
JSON:
  * POST / GET / DELETE latency percentiles through pman, and the engine's own
    create+start / inspect / remove done directly with its SDK as reference;
  * GET poll throughput with 16 concurrent clients (wrk, and a Python client),
    and the upstream way of answering a poll (a new client, an inspect and a
    logs call per poll) as reference;
  * the lag from the engine knowing a job ended to pman saying so, while 16
    clients poll;
  * with 10,000 records in the registry: GET p50, the tracker's engine calls
    per cycle, the first page of a status-filtered list, and the resident
    memory of a worker.

    python bench/load.py [--backend docker|podman] [--jobs 30] [--seconds 10]

It needs the engine up and the test image built (scripts/engines-up.sh,
scripts/build-test-images.sh) and Debian's wrk for the C load generator.
Nothing here asserts: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOCKETS = {"docker": "unix:///var/run/docker.sock", "podman": "unix:///run/podman/podman.sock"}
IMAGE = os.environ.get("PMAN_TEST_IMAGE", "localhost/pman-test-plugin:latest")
#: the bearer token the benchmarked pman requires
TOKEN = secrets.token_hex(32)


def session() -> requests.Session:
    """An HTTP session that sends pman's bearer token."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {TOKEN}"
    return http


CLIENTS = 16


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(len(s) * p / 100))] * 1000, 3)


def latency(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(samples, 50), "p95_ms": pct(samples, 95), "p99_ms": pct(samples, 99)}


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def hammer(call: Callable[[], None], seconds: float, clients: int = CLIENTS) -> dict[str, Any]:
    """``clients`` threads calling ``call`` for ``seconds``: throughput and latency."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                call()
            except Exception:
                errors[i] += 1
                continue
            samples[i].append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    flat = [x for s in samples for x in s]
    return {
        "requests": len(flat),
        "per_s": round(len(flat) / elapsed, 1),
        "errors": sum(errors),
        **latency(flat),
    }


class Pman:
    def __init__(self, backend: str, workdir: Path, workers: int, threads: int) -> None:
        self.storebase = workdir / "storebase"
        (self.storebase / "key-1" / "incoming").mkdir(parents=True)
        (self.storebase / "key-1" / "incoming" / "data.txt").write_text("bench\n")
        self.data = workdir / "data"
        env = {
            **os.environ,
            "CONTAINER_ENV": backend,
            "STOREBASE": str(self.storebase),
            "PMAN_DATA_DIR": str(self.data),
            "DOCKER_HOST": SOCKETS[backend],
            "PMAN_LOG_LEVEL": "WARNING",
            # one access-log line per poll would be measured too; operators choose
            "PMAN_ACCESS_LOG": "no",
            # measured as deployed: every request carries and is checked for a token
            "PMAN_AUTH_TOKENS": TOKEN,
        }
        pman = Path(sys.executable).with_name("pman")
        self.proc = subprocess.Popen(
            [
                str(pman),
                "serve",
                "--port",
                "0",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.url = ""
        self.workers: list[int] = []
        deadline = time.monotonic() + 30
        while (not self.url or len(self.workers) < workers) and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if line.startswith("{"):  # PMAN_LOG_FORMAT=json: the same words, in "message"
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    line = f"granian {record.get('pid')}: {record.get('message')}"
            if m := re.search(r"Listening at: (http://\S+)", line):
                self.url = m.group(1)
            if m := re.search(r"granian (\d+): Started worker-\d+", line):
                self.workers.append(int(m.group(1)))
        if not self.url:
            raise SystemExit("pman did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def rss_mib(self) -> float:
        worst = 0
        for pid in self.workers:
            text = Path(f"/proc/{pid}/status").read_text()
            worst = max(worst, int(re.search(r"VmRSS:\s+(\d+)", text).group(1)))  # type: ignore[union-attr]
        return round(worst / 1024, 1)


def job(jid: str, seconds: int = 600) -> dict[str, Any]:
    return {
        "jid": jid,
        "args": [str(seconds)],
        "auid": "bench",
        "number_of_workers": 1,
        "cpu_limit": 100,
        "memory_limit": 32,
        "gpu_limit": 0,
        "image": IMAGE,
        "entrypoint": ["sleeper"],
        "type": "fs",
        "input_dir": "key-1/incoming",
        "output_dir": f"key-1/out-{jid}",
    }


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat): user ... steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def run_wrk(
    url: str, jids: list[str], seconds: int, clients: int = CLIENTS
) -> dict[str, Any] | None:
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("local jids = {" + ",".join(f'"{j}"' for j in jids) + "}\n")
        f.write(
            "local i = 0\nrequest = function()\n  i = i + 1\n"
            '  return wrk.format("GET", "/api/v1/" .. jids[(i % #jids) + 1] .. "/")\nend\n'
        )
        script = f.name
    before = cpu_times()
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, clients)}",
            f"-c{clients}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "-s",
            script,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script)
    result: dict[str, Any] = {"per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if m:
            scale = {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
            result[f"p{p}_ms"] = round(float(m.group(1)) * scale, 3)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    # time the hypervisor gave our CPUs to other guests: stalls no code can avoid
    spent = [b - a for a, b in zip(before, cpu_times(), strict=True)]
    result["cpu_steal_pct"] = round(100 * spent[7] / max(1, sum(spent)), 1)
    return result


def tracker_lag(
    url: str, api: docker.APIClient, count: int, load: Callable[[], None]
) -> dict[str, Any]:
    """Seconds from the engine knowing a job ended (its FinishedAt) to pman
    reporting it, for ``count`` short jobs finishing while ``load`` polls."""
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                load()

    threads = [threading.Thread(target=background) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    http = session()
    lags = []
    try:
        jids = [f"bench-lag-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        for j in jids:
            http.post(f"{url}/api/v1/", json=job(j, seconds=1), timeout=60).raise_for_status()
        from pman.backends.docker import parse_engine_time

        # pman's own event says when it knew; the engine's FinishedAt when the
        # engine knew (a client's sighting would add the client's own delays)
        deadline = time.monotonic() + 60
        pending = set(jids)
        while pending and time.monotonic() < deadline:
            for j in list(pending):
                if http.get(f"{url}/api/v1/{j}/", timeout=30).json()["status"].startswith("fin"):
                    pending.discard(j)
            time.sleep(0.1)
        for j in jids:
            events = http.get(f"{url}/api/v1/{j}/events/", timeout=30).json()["events"]
            known = datetime.fromisoformat(events[-1]["at"])
            finished = parse_engine_time(api.inspect_container(j)["State"]["FinishedAt"])
            lags.append((known - finished).total_seconds())  # type: ignore[operator]
            http.delete(f"{url}/api/v1/{j}/", timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return {
        "jobs": count,
        "p50_s": round(sorted(lags)[len(lags) // 2], 3),
        "max_s": round(max(lags), 3),
    }


def seed_registry(data: Path, count: int) -> None:
    """Insert ``count`` finished jobs straight into the registry (as history)."""
    from sqlalchemy import insert

    from pman.registry import Registry, job_events, jobs

    reg = Registry.from_url(f"sqlite:///{data / 'pman.db'}")
    t = datetime.now(UTC)
    rows = [
        {
            "jid": f"hist-{i}",
            "active": True,
            "backend": "docker",
            "state": "succeeded" if i % 4 else "failed",
            "exit_code": 0 if i % 4 else 1,
            "reason": "",
            "message": "exited",
            "image": IMAGE,
            "cmd": ["sleeper", "1"],
            "auid": "history",
            "submitted_at": t,
            "finished_at": t,
            "updated_at": t,
            "logs": "done\n",
        }
        for i in range(count)
    ]
    with reg.engine.begin() as conn:
        conn.execute(insert(jobs), rows)
        ids = [r[0] for r in conn.execute(jobs.select().with_only_columns(jobs.c.id))]
        conn.execute(
            insert(job_events),
            [{"job_id": i, "at": t, "state": "succeeded", "message": "x"} for i in ids],
        )
    reg.close()


def tracker_calls(data: Path, backend: str) -> int:
    """Engine calls of one tracker cycle over this registry, counted in-process."""
    from pman.backends import load_backend
    from pman.registry import Registry
    from pman.settings import load_settings
    from pman.tracker import FileLock, Tracker

    settings = load_settings(
        {
            "CONTAINER_ENV": backend,
            "STOREBASE": "/tmp",
            "PMAN_DATA_DIR": str(data),
            "DOCKER_HOST": SOCKETS[backend],
        }
    )
    real = load_backend(backend, settings)
    calls = {"n": 0}

    class Counting:
        def __getattr__(self, name: str) -> Any:
            attr = getattr(real, name)
            if name in ("list", "list_active", "get", "logs", "submit", "delete", "ping"):

                def counted(*a: Any, **k: Any) -> Any:
                    calls["n"] += 1
                    return attr(*a, **k)

                return counted
            return attr

    reg = Registry.from_url(settings.registry.database_url)
    tracker = Tracker(reg, Counting(), logs_tail=100, lock=FileLock(data / "bench-count.lock"))  # type: ignore[arg-type]
    tracker.run_once()  # first cycle reconciles; measure a steady one
    calls["n"] = 0
    tracker.run_once()
    reg.close()
    return calls["n"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", default="docker", choices=sorted(SOCKETS))
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2, help="HTTP workers of pman serve")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (median reported)")
    ap.add_argument("--threads", type=int, default=4, help="threads per worker")
    args = ap.parse_args()

    api = docker.APIClient(base_url=SOCKETS[args.backend], version="1.41")
    out: dict[str, Any] = {
        "backend": args.backend,
        "jobs": args.jobs,
        "clients": CLIENTS,
        "cpus": os.cpu_count(),
    }
    work = Path(tempfile.mkdtemp(prefix="pman-bench-"))
    pman = Pman(args.backend, work, args.workers, args.threads)
    http = session()
    try:
        # ---- reference: the engine's own create+start and remove
        direct = []
        ref_names = [f"bench-ref-{uuid.uuid4().hex[:8]}" for _ in range(args.jobs)]
        for name in ref_names:
            hc = api.create_host_config(
                binds=[f"{pman.storebase}/key-1/incoming:/share/incoming:ro"],
                mem_limit=32 * 2**20,
                nano_cpus=100_000_000,
            )

            def create_start(name: str = name, hc: dict[str, Any] = hc) -> None:
                c = api.create_container(
                    IMAGE, entrypoint=["sleeper"], command=["600"], name=name, host_config=hc
                )
                api.start(c)

            direct.append(timed(create_start))
        direct_remove = [timed(lambda n=n: api.remove_container(n, force=True)) for n in ref_names]

        # ---- POST through pman
        jids = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(args.jobs)]
        post = [
            timed(
                lambda j=j: http.post(
                    f"{pman.url}/api/v1/", json=job(j), timeout=60
                ).raise_for_status()
            )
            for j in jids
        ]
        out["post"] = latency(post)
        out["engine_create_start"] = latency(direct)
        out["post_vs_engine_p50"] = round(
            out["post"]["p50_ms"] / out["engine_create_start"]["p50_ms"], 3
        )
        time.sleep(2)  # let the tracker see them running

        # ---- GET polls with 16 clients
        counter = {"i": 0}

        def poll() -> None:
            counter["i"] += 1
            r = requests_local().get(
                f"{pman.url}/api/v1/{jids[counter['i'] % len(jids)]}/", timeout=30
            )
            r.raise_for_status()

        local = threading.local()

        def requests_local() -> requests.Session:
            if not hasattr(local, "s"):
                local.s = session()
            return local.s

        def upstream_poll() -> None:
            # what upstream does per poll: a new client, an inspect, a logs call
            c = docker.DockerClient(base_url=SOCKETS[args.backend], version="1.41")
            try:
                cont = c.containers.get(jids[counter["i"] % len(jids)])
                counter["i"] += 1
                cont.logs(tail=1000)
            finally:
                c.close()

        # the machine is shared and noisy: interleave pman and the reference
        # several times and compare medians
        wrk_runs, ref_runs = [], []
        for _ in range(args.repeat):
            wrk_runs.append(run_wrk(pman.url, jids, args.seconds))
            ref_runs.append(hammer(upstream_poll, args.seconds))
        out["get_wrk_runs"] = wrk_runs
        out["get_wrk"] = (
            sorted(wrk_runs, key=lambda r: r["per_s"])[len(wrk_runs) // 2] if wrk_runs[0] else None
        )
        out["engine_inspect_logs_runs"] = [r["per_s"] for r in ref_runs]
        out["engine_inspect_logs"] = sorted(ref_runs, key=lambda r: r["per_s"])[len(ref_runs) // 2]
        out["get_python"] = hammer(poll, args.seconds)

        best = max(x["per_s"] for x in (out["get_wrk"] or {"per_s": 0}, out["get_python"]))
        out["get_throughput_vs_engine"] = round(best / out["engine_inspect_logs"]["per_s"], 1)
        # one client (wrk, one connection): the latency of a poll without queueing
        out["get_one_client_small"] = run_wrk(pman.url, jids, 5, clients=1)
        out["tracker_engine_calls_per_cycle_small"] = tracker_calls(pman.data, args.backend)
        out["state_lag_under_load"] = tracker_lag(pman.url, api, 10, poll)
        out["rss_mib_small"] = pman.rss_mib()

        # ---- with many records
        seed_registry(pman.data, args.records)
        out["records"] = args.records
        out["get_one_client_large"] = run_wrk(pman.url, jids, 5, clients=1)
        out["get_wrk_large"] = run_wrk(pman.url, jids, args.seconds)
        out["tracker_engine_calls_per_cycle_large"] = tracker_calls(pman.data, args.backend)
        listing = [
            timed(
                lambda: http.get(
                    f"{pman.url}/api/v1/jobs/?status=finishedSuccessfully&limit=50", timeout=30
                ).raise_for_status()
            )
            for _ in range(50)
        ]
        out["list_status_first_page"] = latency(listing)
        out["rss_mib_large"] = pman.rss_mib()

        # ---- DELETE through pman, and the engine's own remove
        delete = [
            timed(lambda j=j: http.delete(f"{pman.url}/api/v1/{j}/", timeout=60).raise_for_status())
            for j in jids
        ]
        out["delete"] = latency(delete)
        out["engine_remove"] = latency(direct_remove)
    finally:
        pman.stop()
        for c in api.containers(all=True, filters={"label": "org.chrisproject.pman=true"}):
            if c["Names"][0].lstrip("/").startswith("bench-"):
                api.remove_container(c["Id"], force=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
