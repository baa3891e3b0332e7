#!/usr/bin/env python3
"""SLURM benchmark: pman's slurm backend against SLURM's own tools, in the same run.

Prints JSON:
  * submission: N trivial jobs POSTed to pman over HTTP (one at a time; each
    is a registry record, a job folder, a batch script and one sbatch) and N
    direct `sbatch` calls of an equivalent script with the same options,
    interleaved in batches so both see the same cluster load; totals, per-job
    latency percentiles and the ratio pman / sbatch;
  * the tracker: with 10 and with 1,000 unfinished pman jobs (held with
    --hold, so they stay PENDING and cost the node nothing), the SLURM
    commands one tracker cycle runs (must not grow with the number of jobs)
    and how long a cycle takes.

    python bench/slurm.py [--jobs 200] [--tracked 10,1000] [--batch 20]

It needs the cluster up (scripts/slurm-up.sh). `bash scripts/dev.sh bench
slurm [args]` sets everything up and runs it. Nothing here asserts: it
prints figures. Jobs it submits are cancelled at the end; SLURM keeps their
records for MinJobAge.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pman.app import create_app  # noqa: E402
from pman.backends.slurm import SlurmBackend  # noqa: E402
from pman.models import JobRequest  # noqa: E402
from pman.settings import load_settings  # noqa: E402


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(len(s) * p / 100))] * 1000, 2)


def latency(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(samples, 50), "p90_ms": pct(samples, 90), "p99_ms": pct(samples, 99)}


def body(jid: str) -> dict[str, Any]:
    return {
        "jid": jid,
        "args": [],
        "auid": "bench",
        "number_of_workers": 1,
        "cpu_limit": 100,
        "memory_limit": 16,
        "gpu_limit": 0,
        "image": "none",
        "entrypoint": ["true"],
        "type": "fs",
        "input_dir": "in",
        "output_dir": f"out/{jid}",
    }


def make_pman(base: Path, name: str, **env: str) -> Any:
    storebase = base / "storebase"
    (storebase / "in").mkdir(parents=True, exist_ok=True)
    settings = load_settings(
        {
            "CONTAINER_ENV": "slurm",
            "SLURM_CONTAINER_RUNTIME": "none",
            "STOREBASE": str(storebase),
            "PMAN_DATA_DIR": str(base / f"data-{name}"),
            "PMAN_TRACKER": "no",
            "PMAN_AUTH": "none",
            "PMAN_ACCESS_LOG": "no",
            "PMAN_LOG_LEVEL": "WARNING",
            **env,
        }
    )
    return create_app(settings)


def sbatch_direct(script: Path, jid: str, out: Path) -> str:
    done = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--job-name={jid}",
            f"--output={out}",
            "--open-mode=append",
            f"--chdir={out.parent}",
            "--export=NONE",
            "--no-requeue",
            "--time=30",
            "--cpus-per-task=1",
            "--mem=16M",
            str(script),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().split(";")[0]


def slurm_ids(backend: SlurmBackend) -> list[str]:
    """The SLURM job ids of every job pman submitted (from the job folders)."""
    found = []
    for meta in backend.jobs_dir.glob("*/meta.json"):
        slurm_id = json.loads(meta.read_text()).get("slurm_id")
        if slurm_id:
            found.append(str(slurm_id))
    return found


def scancel(ids: list[str]) -> None:
    for i in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[i : i + 500]], capture_output=True, check=False)


def bench_submit(base: Path, jobs: int, batch: int) -> dict[str, Any]:
    app = make_pman(base, "submit")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/v1/"
    backend: SlurmBackend = app.extensions["pman"].service.backend
    direct_dir = base / "direct"
    direct_dir.mkdir()
    script = direct_dir / "job.sh"
    script.write_text("#!/bin/bash\ntrue /share/outgoing\n")
    session = requests.Session()
    pman_s: list[float] = []
    direct_s: list[float] = []
    ids: list[str] = []
    tag = uuid.uuid4().hex[:6]
    try:
        for start in range(0, jobs, batch):
            for i in range(start, min(jobs, start + batch)):
                t = time.perf_counter()
                resp = session.post(url, json=body(f"bench-{tag}-p{i}"), timeout=60)
                pman_s.append(time.perf_counter() - t)
                resp.raise_for_status()
            for i in range(start, min(jobs, start + batch)):
                t = time.perf_counter()
                ids.append(sbatch_direct(script, f"bench-{tag}-d{i}", direct_dir / "log"))
                direct_s.append(time.perf_counter() - t)
        calls = dict(backend.client.calls)
    finally:
        server.shutdown()
        ids += slurm_ids(backend)
        scancel(ids)
    total_p, total_d = sum(pman_s), sum(direct_s)
    return {
        "jobs": jobs,
        "pman_post": {"total_s": round(total_p, 2), **latency(pman_s)},
        "direct_sbatch": {"total_s": round(total_d, 2), **latency(direct_s)},
        "ratio_pman_over_sbatch": round(total_p / total_d, 2),
        "slurm_commands_by_pman": calls,
    }


def bench_tracker(base: Path, jobs: int, cycles: int = 5) -> dict[str, Any]:
    app = make_pman(base, f"tracker-{jobs}", SLURM_EXTRA_OPTIONS="--hold")
    service = app.extensions["pman"].service
    backend: SlurmBackend = service.backend
    tag = uuid.uuid4().hex[:6]
    try:
        t = time.perf_counter()
        for i in range(jobs):
            b = body(f"track-{tag}-{i}")
            service.submit(JobRequest(**{**b, "args_path_flags": [], "env": []}))
        submit_s = time.perf_counter() - t
        first_calls = dict(backend.client.calls)
        report = service.tracker.run_once()  # the first cycle reconciles too
        first = {
            "reported_engine_calls": report.engine_calls,
            "commands": _diff(backend.client.calls, first_calls),
        }
        per_cycle: list[dict[str, int]] = []
        seconds: list[float] = []
        for _ in range(cycles):
            before = dict(backend.client.calls)
            t = time.perf_counter()
            report = service.tracker.run_once()
            seconds.append(time.perf_counter() - t)
            per_cycle.append(_diff(backend.client.calls, before))
        watched = report.watched
    finally:
        scancel(slurm_ids(backend))
    return {
        "unfinished_jobs": jobs,
        "watched_by_tracker": watched,
        "submit_s": round(submit_s, 2),
        "first_cycle_with_reconcile": first,
        "slurm_commands_per_cycle": per_cycle[-1],
        "slurm_commands_per_cycle_all_equal": all(c == per_cycle[0] for c in per_cycle),
        "cycle_s_median": round(statistics.median(seconds), 4),
    }


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=200, help="jobs submitted each way")
    ap.add_argument("--batch", type=int, default=20, help="jobs per interleaved batch")
    ap.add_argument("--tracked", default="10,1000", help="unfinished jobs for the tracker")
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    if shutil.which("sbatch") is None:
        sys.exit("sbatch not found: start the cluster with scripts/slurm-up.sh")
    base = Path(tempfile.mkdtemp(prefix="pman-bench-slurm-"))
    try:
        out: dict[str, Any] = {"submit": bench_submit(base, args.jobs, args.batch)}
        out["tracker"] = [bench_tracker(base, int(n)) for n in args.tracked.split(",")]
        out["cpus"] = len(os.sched_getaffinity(0))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
