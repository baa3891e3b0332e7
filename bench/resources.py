#!/usr/bin/env python3
"""Multi-resource benchmark (issue 15): what serving five compute resources
costs next to serving one, in the same session.

  * GET poll throughput (wrk, 16 connections, bench/load.py's run_wrk) of a
    pman serving ONE resource (CONTAINER_ENV=docker) and of a pman serving
    FIVE (PMAN_RESOURCES: two Docker, two Podman, one local), both up at once,
    measured in alternation (--repeat runs each, median reported) and the
    ratio five/one printed. The polled jobs sleep: on Docker for the one,
    spread over the five resources in turn for the five.
  * the tracker's engine calls per cycle (counted in-process, as bench/load.py's
    tracker_calls does) over each pman's registry: with its --jobs running jobs
    and then with --records more (history, spread over the resources). One
    resource: one list per cycle; five: one per resource that has unfinished
    jobs (every one here), flat in the records.

    python bench/resources.py [--jobs 10] [--seconds 10] [--repeat 5] [--records 10000]

The five resources are Docker-family and local so that the run needs only the
engines of scripts/engines-up.sh, and so that every poll is answered the same
way in both configurations (pman's registry; no engine call on the poll path).
Nothing here asserts: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import load  # bench/load.py, next to this file
from load import SOCKETS, Pman, job, run_wrk, seed_registry, session, tracker_calls

#: the five resources: name -> engine, in PMAN_RESOURCES order
FIVE = {"dock": "docker", "pod": "podman", "loc": "local", "dock2": "docker", "pod2": "podman"}
#: the resources the polled jobs run on, in turn
JOB_RESOURCES = tuple(FIVE)
#: the sleeper of the test image, as a local job runs it (on the host)
HOST_SLEEPER = (
    Path(__file__).resolve().parents[1] / "tests" / "images" / "plugin" / "bin" / "sleeper"
)


def five_env() -> dict[str, str]:
    """The variables that make a pman serve FIVE (on top of load.Pman's own)."""
    env = {"PMAN_RESOURCES": ",".join(FIVE)}
    for name, engine in FIVE.items():
        env[f"{name.upper()}_CONTAINER_ENV"] = engine
        if engine in SOCKETS:
            env[f"{name.upper()}_DOCKER_HOST"] = SOCKETS[engine]
    return env


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """os.environ with ``extra`` (load.Pman starts pman serve with os.environ)."""
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def counting(backend: Any, calls: dict[str, int], name: str) -> Any:
    """``backend`` with its engine calls counted in ``calls[name]`` (the methods
    bench/load.py's tracker_calls counts)."""

    class Counting:
        def __getattr__(self, attr: str) -> Any:
            value = getattr(backend, attr)
            if attr in ("list", "list_active", "get", "logs", "submit", "delete", "ping"):

                def counted(*a: Any, **k: Any) -> Any:
                    calls[name] += 1
                    return value(*a, **k)

                return counted
            return value

    return Counting()


def five_tracker_calls(data: Path, storebase: Path) -> dict[str, int]:
    """Engine calls of one steady tracker cycle of the five-resource pman whose
    data folder is ``data``, per resource and in all."""
    from pman.registry import Registry
    from pman.resources import build_runtimes
    from pman.settings import load_settings
    from pman.tracker import FileLock, Tracker

    settings = load_settings(
        {
            "CONTAINER_ENV": "docker",
            "DOCKER_HOST": SOCKETS["docker"],
            "STOREBASE": str(storebase),
            "PMAN_DATA_DIR": str(data),
            **five_env(),
        }
    )
    runtimes = build_runtimes(settings)
    calls = dict.fromkeys(FIVE, 0)
    for runtime in runtimes:
        runtime.backend = counting(runtime.backend, calls, runtime.name)
    reg = Registry.from_url(settings.registry.database_url)
    tracker = Tracker.for_resources(reg, runtimes, settings)
    tracker.lock = FileLock(data / "bench-count.lock")
    tracker.deliverer = None
    tracker.run_once()  # the first cycle reconciles; measure a steady one
    for name in calls:
        calls[name] = 0
    tracker.run_once()
    reg.close()
    return {**calls, "total": sum(calls.values())}


def spread_history(data: Path) -> None:
    """Give the seeded history records (load.seed_registry: resource 'default')
    the five resources in turn."""
    from sqlalchemy import update

    from pman.registry import Registry, jobs

    reg = Registry.from_url(f"sqlite:///{data / 'pman.db'}")
    with reg.engine.begin() as conn:
        for i, name in enumerate(FIVE):
            conn.execute(
                update(jobs)
                .where(jobs.c.jid.like("hist-%"), (jobs.c.id % len(FIVE)) == i)
                .values(resource=name)
            )
    reg.close()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]


def wait_running(url: str, jids: list[str], timeout: float = 120) -> None:
    http = session()
    deadline = time.monotonic() + timeout
    for j in jids:
        while http.get(f"{url}/api/v1/{j}/", timeout=30).json()["status"] != "started":
            if time.monotonic() > deadline:
                raise SystemExit(f"job {j} never started")
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=10, help="sleeping jobs polled on each pman")
    ap.add_argument("--seconds", type=int, default=10, help="length of one wrk run")
    ap.add_argument("--repeat", type=int, default=5, help="alternating wrk runs on each pman")
    ap.add_argument("--records", type=int, default=10_000, help="history records seeded")
    ap.add_argument("--workers", type=int, default=2, help="HTTP workers of pman serve")
    ap.add_argument("--threads", type=int, default=4, help="threads per worker")
    args = ap.parse_args()

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/dev.sh bench resources installs it)")
    out: dict[str, Any] = {
        "one": "one resource: CONTAINER_ENV=docker",
        "five": "five resources: "
        + ", ".join(f"{n} ({e})" for n, e in FIVE.items())
        + f"; jobs on {', '.join(JOB_RESOURCES)}",
        "jobs": args.jobs,
        "clients": load.CLIENTS,
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
    }
    work = Path(tempfile.mkdtemp(prefix="pman-bench-res-"))
    (work / "one").mkdir()
    (work / "five").mkdir()
    one = Pman("docker", work / "one", args.workers, args.threads)
    with environ(five_env()):
        five = Pman("docker", work / "five", args.workers, args.threads)
    http = session()
    made: dict[str, list[str]] = {"one": [], "five": []}
    try:
        for i in range(args.jobs):
            j = f"bench-res-one-{uuid.uuid4().hex[:8]}"
            http.post(f"{one.url}/api/v1/", json=job(j), timeout=60).raise_for_status()
            made["one"].append(j)
            j = f"bench-res-five-{uuid.uuid4().hex[:8]}"
            resource = JOB_RESOURCES[i % len(JOB_RESOURCES)]
            body = {**job(j), "compute_resource": resource}
            if FIVE[resource] == "local":
                body["entrypoint"] = [str(HOST_SLEEPER)]
            http.post(f"{five.url}/api/v1/", json=body, timeout=60).raise_for_status()
            made["five"].append(j)
        wait_running(one.url, made["one"])
        wait_running(five.url, made["five"])

        # ---- GET polls, alternating, both pmans up the whole time
        runs: dict[str, list[dict[str, Any]]] = {"one": [], "five": []}
        for i in range(args.repeat):
            # which goes first alternates too: neither always follows the other
            order = (("one", one), ("five", five)) if i % 2 == 0 else (("five", five), ("one", one))
            for name, pman in order:
                result = run_wrk(pman.url, made[name], args.seconds)
                assert result is not None
                runs[name].append(result)
        for name in ("one", "five"):
            out[f"get_wrk_{name}_runs"] = [r["per_s"] for r in runs[name]]
            out[f"get_wrk_{name}"] = median_run(runs[name])
        out["get_five_vs_one"] = round(
            statistics.median(r["per_s"] for r in runs["five"])
            / statistics.median(r["per_s"] for r in runs["one"]),
            3,
        )

        # ---- the tracker's engine calls per cycle, with the running jobs and with history
        small, large = f"{args.jobs} records", f"{args.jobs + args.records} records"
        calls: dict[str, Any] = {
            "one": {small: tracker_calls(one.data, "docker")},
            "five": {small: five_tracker_calls(five.data, five.storebase)},
        }
        seed_registry(one.data, args.records)
        seed_registry(five.data, args.records)
        spread_history(five.data)
        calls["one"][large] = tracker_calls(one.data, "docker")
        calls["five"][large] = five_tracker_calls(five.data, five.storebase)
        out["records"] = args.records
        out["tracker_engine_calls_per_cycle"] = calls
    finally:
        for name, pman in (("one", one), ("five", five)):
            for j in made[name]:
                with contextlib.suppress(Exception):
                    http.delete(f"{pman.url}/api/v1/{j}/", timeout=60)
            pman.stop()
        for engine in ("docker", "podman"):
            with contextlib.suppress(Exception):
                api = docker.APIClient(base_url=SOCKETS[engine], version="1.41")
                for c in api.containers(all=True, filters={"name": "bench-res-"}):
                    with contextlib.suppress(docker.errors.NotFound):
                        api.remove_container(c["Id"], force=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
