#!/usr/bin/env python3
"""The load benchmark of this working tree against a reference commit, in one session.

    python bench/compare.py [--ref 25ba7ec] [--runs 5] [-- LOAD.PY ARGS...]
    bash scripts/dev.sh bench compare [REF] [LOAD.PY ARGS...]

Runs bench/load.py ``--runs`` times for each side, alternating (reference,
this tree, reference, ...), each run with ``--repeat 1``, so both sides see
the same machine, whatever else it is doing meanwhile. Each side runs its
own bench/load.py with its own virtualenv: its own `pman serve`, and its
own registry code where load.py reaches in (seeding 10,000 records, a
tracker cycle). The reference is a git worktree of REF with a virtualenv of
its own, made on first use under ~/.cache/pman-ref/<commit> (PMAN_REF_DIR to
choose another folder) and kept for the next comparison.

It prints, for every figure load.py measures, the median of each side's runs
and the ratio this tree / reference, marking the figures more than 10% worse
(higher latencies, lower throughputs); then the whole of it as JSON. Like
load.py, it asserts nothing: no test runs it, and a noisy machine makes a
single session's ratios move by more than 10% (load.py's cpu_steal_pct
shows how much the hypervisor took).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = "25ba7ec"  # release 4.0.0
#: a ratio this much worse than 1 is flagged
TOLERANCE = 0.10
#: figures that are settings or counts of the run, not measurements
NOT_MEASURED = {"jobs", "clients", "cpus", "records", "requests", "errors", "non_2xx"}


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def reference_tree(ref: str) -> Path:
    """A worktree of ``ref`` with its own virtualenv (made once, then reused)."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    base = Path(os.environ.get("PMAN_REF_DIR", Path.home() / ".cache" / "pman-ref"))
    tree = base / commit
    if not (tree / "bench" / "load.py").exists():
        base.mkdir(parents=True, exist_ok=True)
        log(f"making a worktree of {ref} ({commit[:12]}) in {tree}")
        git("worktree", "add", "--detach", str(tree), commit)
    if not (tree / ".venv" / "bin" / "pman").exists():
        log(f"installing {ref} into {tree / '.venv'}")
        env = {**os.environ, "PMAN_VENV": str(tree / ".venv")}
        subprocess.run(["bash", str(tree / "scripts" / "dev.sh"), "venv"], env=env, check=True)
    return tree


def log(text: str) -> None:
    print(f"[compare] {text}", file=sys.stderr, flush=True)


def run_load(tree: Path, python: Path, args: list[str]) -> dict[str, Any]:
    """One run of ``tree``'s bench/load.py with its own virtualenv's Python."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(python), str(tree / "bench" / "load.py"), *args, "--repeat", "1"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(
            f"bench/load.py of {tree} failed ({out.returncode}):\n{out.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def figures(result: Any, prefix: str = "") -> dict[str, float]:
    """Every measured number of a load.py result, by its path (``get_wrk.p99_ms``)."""
    found: dict[str, float] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            if key.endswith("_runs") or key in NOT_MEASURED:
                continue  # a run's list (repeat 1: the same figure) or a setting
            found.update(figures(value, f"{prefix}{key}."))
    elif isinstance(result, (int, float)) and not isinstance(result, bool):
        found[prefix.rstrip(".")] = float(result)
    return found


def higher_is_better(name: str) -> bool:
    return name.endswith("per_s") or name.endswith("_vs_engine")


def not_pmans(name: str) -> bool:
    """The engine's own calls (load.py's reference) and the hypervisor's steal:
    the same code on both sides, so their ratios show how noisy the machine was."""
    return name.startswith("engine_") or name.endswith("cpu_steal_pct")


def verdict(name: str, ratio: float | None) -> str:
    if not_pmans(name):
        return "(not pman's: the machine's noise)"
    if ratio is None:
        return ""
    worse = ratio < 1 - TOLERANCE if higher_is_better(name) else ratio > 1 + TOLERANCE
    return f"worse by more than {TOLERANCE:.0%}" if worse else ""


def compare(ref_runs: list[dict[str, Any]], new_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ref_figs = [figures(r) for r in ref_runs]
    new_figs = [figures(r) for r in new_runs]
    names = sorted({n for f in ref_figs + new_figs for n in f})
    rows = []
    for name in names:
        ref = [f[name] for f in ref_figs if name in f]
        new = [f[name] for f in new_figs if name in f]
        ref_med = statistics.median(ref) if ref else None
        new_med = statistics.median(new) if new else None
        ratio = round(new_med / ref_med, 3) if ref_med and new_med is not None else None
        rows.append(
            {
                "figure": name,
                "better": "higher" if higher_is_better(name) else "lower",
                "reference_median": ref_med,
                "this_tree_median": new_med,
                "ratio": ratio,
                "note": verdict(name, ratio),
                "reference_runs": ref,
                "this_tree_runs": new,
            }
        )
    return rows


def table(rows: list[dict[str, Any]], ref: str) -> str:
    head = f"{'figure':44} {'better':6} {ref[:12]:>12} {'this tree':>12} {'ratio':>7}  note"
    lines = [head, "-" * len(head)]
    for r in rows:

        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:,.3f}".rstrip("0").rstrip(".")

        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(
            f"{r['figure']:44} {r['better']:6} {num(r['reference_median']):>12} "
            f"{num(r['this_tree_median']):>12} {ratio:>7}  {r['note']}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--ref", default=DEFAULT_REF, help=f"the reference commit (default {DEFAULT_REF})"
    )
    ap.add_argument("--runs", type=int, default=5, help="runs of each side (default 5)")
    ap.add_argument("load_args", nargs="*", help="arguments for bench/load.py (after --)")
    args = ap.parse_args()
    ref_tree = reference_tree(args.ref)
    sides = {
        "reference": (ref_tree, ref_tree / ".venv" / "bin" / "python"),
        "this tree": (ROOT, Path(sys.executable)),
    }
    results: dict[str, list[dict[str, Any]]] = {"reference": [], "this tree": []}
    started = time.monotonic()
    for i in range(args.runs):
        for side, (tree, python) in sides.items():
            log(f"run {i + 1}/{args.runs}: {side} ({tree})")
            results[side].append(run_load(tree, python, args.load_args))
    rows = compare(results["reference"], results["this tree"])
    commit = git("rev-parse", "--short=12", "HEAD")
    print(
        f"bench/load.py {' '.join(args.load_args)}: {args.runs} runs per side, alternating, "
        f"{time.monotonic() - started:.0f} s; reference {args.ref}, this tree {commit} "
        "(with its uncommitted changes)\n"
    )
    print(table(rows, args.ref))
    print()
    print(json.dumps({"ref": args.ref, "this_tree": commit, "runs": results, "figures": rows}))


if __name__ == "__main__":
    main()
