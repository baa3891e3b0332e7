"""``pman submit|status|logs|cancel|delete|list|resources``: a command-line client of pman's
HTTP API (pman.client), in the same console script as ``pman serve``.

Exit codes: 0 done (with ``--wait``: the job finished successfully); with
``--wait``, a job that finished with an error exits with its own exit code
(1 when it has none, or none in 1-255); 1 other failures; 2 usage or a request
pman refused (400); 3 no such job (404); 4 no or wrong credentials (401/403);
5 pman (or its engine) unreachable or failing (5xx, connection errors);
6 the jid is taken by a different request (409); 130 interrupted (the job
keeps running).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from pman.client import (
    DEFAULT_URL,
    FINISHED,
    BadRequest,
    ClientError,
    Conflict,
    NotFound,
    PmanClient,
    Unauthorized,
    Unavailable,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_UNAVAILABLE = 5
EXIT_CONFLICT = 6
EXIT_INTERRUPTED = 130

COMMANDS = ("submit", "status", "logs", "cancel", "delete", "list", "resources")

#: what `pman submit` sends for fields neither the file nor a flag gives
SUBMIT_DEFAULTS: dict[str, Any] = {
    "args": [],
    "args_path_flags": [],
    "number_of_workers": 1,
    "cpu_limit": 1000,
    "memory_limit": 1024,
    "gpu_limit": 0,
    "type": "ds",
    "env": [],
}


def add_commands(sub: Any) -> None:
    """Add the client's subcommands to the console script's subparsers."""
    # --url/--token also after the subcommand; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common, argparse.SUPPRESS)

    p = sub.add_parser(
        "submit",
        parents=[common],
        help="submit a job (from a JSON file and/or flags)",
        description="Submit a job: the fields of a JSON file (-f), overridden by flags. "
        "Plugin arguments follow the options (after -- when they start with a dash).",
    )
    p.add_argument("-f", "--file", help="a JSON job request (POST /api/v1/ body); - for stdin")
    p.add_argument("--jid", help="job name (default: a new cli-<random> name)")
    p.add_argument("--image", help="OCI image")
    p.add_argument("--entrypoint", help='command prefix, split like a shell ("python app.py")')
    p.add_argument("--type", choices=("ds", "fs", "ts"), help="plugin type (default ds)")
    p.add_argument("--input-dir", help="input folder, relative to STOREBASE")
    p.add_argument("--output-dir", help="output folder, relative to STOREBASE")
    p.add_argument("--cpu-limit", type=int, help="millicores (default 1000 = one CPU)")
    p.add_argument("--memory-limit", type=int, help="MiB (default 1024)")
    p.add_argument("--gpu-limit", type=int, help="GPUs (default 0)")
    p.add_argument("--workers", type=int, help="number_of_workers (default 1)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="repeatable")
    p.add_argument("--path-flag", action="append", help="args_path_flags entry; repeatable")
    p.add_argument("--auid", help="requesting user (default $USER)")
    p.add_argument("--callback-url", help="URL pman POSTs the job's state transitions to")
    p.add_argument(
        "--compute-resource", help="the compute resource to run it on (see pman resources)"
    )
    p.add_argument("args", nargs="*", help="plugin arguments")
    _wait_options(p)

    p = sub.add_parser("status", parents=[common], help="a job's status")
    p.add_argument("jid")
    _wait_options(p)

    p = sub.add_parser("logs", parents=[common], help="a job's logs")
    p.add_argument("jid")
    p.add_argument("--tail", type=int, help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")

    p = sub.add_parser("cancel", parents=[common], help="stop a job, keeping it")
    p.add_argument("jid")

    p = sub.add_parser("delete", parents=[common], help="stop and remove a job")
    p.add_argument("jid")

    p = sub.add_parser("list", parents=[common], help="jobs, newest first")
    p.add_argument("--status", action="append", help="v1 status or pman state; repeatable or a,b")
    p.add_argument("--auid", help="only this user's jobs")
    p.add_argument("--compute-resource", help="only the jobs of this compute resource")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "resources", parents=[common], help="the compute resources: health, load, caps"
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def add_connection_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--url", default=default, help=f"pman's base URL (env PMAN_URL; default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token", default=default, help="bearer token (env PMAN_TOKEN, which ps cannot show)"
    )
    parser.add_argument("--token-file", default=default, help="read the bearer token from a file")


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait", action="store_true", help="show progress until the job ends; exit as it did"
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    p.add_argument("--json", action="store_true", help="print the job as JSON")


def client_from_args(args: argparse.Namespace) -> PmanClient:
    url = getattr(args, "url", None) or os.environ.get("PMAN_URL") or DEFAULT_URL
    token = getattr(args, "token", None)
    token_file = getattr(args, "token_file", None)
    if token is None and token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise UsageError(f"cannot read --token-file {token_file}: {e.strerror}") from e
    if token is None:
        token = os.environ.get("PMAN_TOKEN") or None
    return PmanClient(url, token)


class UsageError(Exception):
    pass


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a client subcommand; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        client = client_from_args(args)
        handler = globals()[f"_cmd_{args.command}"]
        return handler(client, args, out, err)
    except UsageError as e:
        print(f"pman {args.command}: {e}", file=err)
        return EXIT_USAGE
    except ClientError as e:
        print(f"pman {args.command}: {e.message}", file=err)
        if isinstance(e, BadRequest):
            for name, problem in e.fields.items():
                print(f"  {name}: {problem}", file=err)
        return exit_code_for(e)
    except KeyboardInterrupt:
        print(f"\npman {args.command}: interrupted", file=err)
        return EXIT_INTERRUPTED


def exit_code_for(e: ClientError) -> int:
    for cls, code in (
        (BadRequest, EXIT_USAGE),
        (NotFound, EXIT_NOT_FOUND),
        (Unauthorized, EXIT_AUTH),
        (Unavailable, EXIT_UNAVAILABLE),
        (Conflict, EXIT_CONFLICT),
    ):
        if isinstance(e, cls):
            return code
    return EXIT_FAILED


# ---------------------------------------------------------------- commands
def submit_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body: defaults, then the file's fields, then the flags."""
    body: dict[str, Any] = {**SUBMIT_DEFAULTS, "auid": os.environ.get("USER") or "pman-cli"}
    if args.file:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            from_file = json.loads(text)
        except OSError as e:
            raise UsageError(f"cannot read {args.file}: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise UsageError(f"{args.file} is not JSON: {e}") from e
        if not isinstance(from_file, dict):
            raise UsageError(f"{args.file} must hold a JSON object (a job request)")
        body.update(from_file)
    flags = {
        "jid": args.jid,
        "image": args.image,
        "type": args.type,
        "input_dir": args.input_dir,
        "output_dir": args.output_dir,
        "cpu_limit": args.cpu_limit,
        "memory_limit": args.memory_limit,
        "gpu_limit": args.gpu_limit,
        "number_of_workers": args.workers,
        "env": args.env,
        "args_path_flags": args.path_flag,
        "auid": args.auid,
        "callback_url": args.callback_url,
        "compute_resource": args.compute_resource,
        "args": args.args or None,
    }
    if args.entrypoint is not None:
        try:
            flags["entrypoint"] = shlex.split(args.entrypoint)
        except ValueError as e:
            raise UsageError(f"--entrypoint: {e}") from e
    body.update({k: v for k, v in flags.items() if v is not None})
    body.setdefault("jid", f"cli-{uuid.uuid4().hex[:12]}")
    missing = [k for k in ("image", "entrypoint", "input_dir", "output_dir") if k not in body]
    if missing:
        flags_named = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise UsageError(f"missing {flags_named} (or give them in the file)")
    return body


def _cmd_submit(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    body = submit_body(args)
    job, created = client.submit(body)
    if not created:
        print(f"{job['jid']}: submitted before with the same request", file=err)
    if args.wait:
        return _wait(client, job["jid"], args, out, err)
    _print_job(job, args.json, out)
    return EXIT_OK


def _cmd_status(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.wait:
        return _wait(client, args.jid, args, out, err)
    _print_job(client.status(args.jid), args.json, out)
    return EXIT_OK


def _cmd_logs(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.follow:
        for chunk in client.follow_logs(args.jid, args.tail):
            out.write(chunk)
            out.flush()
    else:
        out.write(client.logs(args.jid, args.tail))
    return EXIT_OK


def _cmd_cancel(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    job = client.cancel(args.jid)
    status = f": {job['status']}" if job and "status" in job else ""
    print(f"{args.jid}: cancelled{status}", file=out)
    return EXIT_OK


def _cmd_delete(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client.delete(args.jid)
    print(f"{args.jid}: deleted", file=out)
    return EXIT_OK


def _cmd_list(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    jobs = list(client.jobs(args.status, args.auid, args.limit, args.compute_resource))
    if args.json:
        json.dump(jobs, out, indent=2)
        out.write("\n")
        return EXIT_OK
    rows = [("JID", "STATUS", "STATE", "EXIT", "SUBMITTED", "MESSAGE")]
    for j in jobs:
        code = "" if j.get("exit_code") is None else str(j["exit_code"])
        rows.append((j["jid"], j["status"], j["state"], code, j["submitted_at"][:19], j["message"]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:5], widths, strict=True)]
        print("  ".join([*cells, r[5]]).rstrip(), file=out)
    return EXIT_OK


def _cmd_resources(client: PmanClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    resources = client.resources()
    if args.json:
        json.dump(resources, out, indent=2)
        out.write("\n")
        return EXIT_OK
    rows = [("NAME", "BACKEND", "HEALTH", "RUNNING", "QUEUED", "MAX", "GPUS", "WORKERS", "ABOUT")]
    for r in resources:
        caps, can = r.get("caps") or {}, r.get("capabilities") or {}
        health = "ok" if r.get("healthy") else f"DOWN: {r.get('problem') or '?'}"
        workers = can.get("max_workers")
        rows.append(
            (
                r["name"],
                r["backend"],
                health if r.get("healthy") else "down",
                str(r.get("running", 0)),
                str(r.get("queued", 0)),
                str(caps.get("max_running") or "-"),
                "yes" if can.get("gpus") else "no",
                "any" if workers is None else str(workers),
                r.get("description", "") if r.get("healthy") else health,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(8)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:8], widths, strict=True)]
        print("  ".join([*cells, row[8]]).rstrip(), file=out)
    return EXIT_OK


# ---------------------------------------------------------------- helpers
def _wait(client: PmanClient, jid: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    started = time.monotonic()
    tty = err.isatty()
    last: list[str] = []

    def progress(job: dict[str, Any]) -> None:
        elapsed = time.monotonic() - started
        line = f"{job['jid']}: {job['status']}"
        if job.get("message"):
            line += f" ({job['message']})"
        if tty:
            err.write(f"\r\033[K{line} [{elapsed:.0f} s]")
            if job["status"] in FINISHED:
                err.write("\n")
            err.flush()
        elif [line] != last:
            print(f"{line} [{elapsed:.0f} s]", file=err, flush=True)
        last[:] = [line]

    job = client.wait(jid, args.interval, progress)
    _print_job(job, args.json, out)
    return job_exit_code(client, job)


def job_exit_code(client: PmanClient, job: dict[str, Any]) -> int:
    """0 for a success; else the job's own exit code when it is one a process can
    have (1-255), else 1."""
    if job["status"] == "finishedSuccessfully":
        return EXIT_OK
    summary = client.summary(job["jid"])
    code = summary.get("exit_code") if summary else None
    if isinstance(code, int) and 1 <= code <= 255:
        return code
    return EXIT_FAILED


def _print_job(job: dict[str, Any], as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(job, out, indent=2)
        out.write("\n")
        return
    for key in ("jid", "status", "message", "image", "cmd", "timestamp"):
        if key in job:
            print(f"{key + ':':<11}{job[key]}", file=out)
