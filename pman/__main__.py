"""``pman`` / ``python -m pman``: run the service (``serve``, ``track``), or talk
to one (``submit``, ``status``, ``logs``, ``cancel``, ``delete``, ``list``: see
pman.cli for their exit codes)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pman import __version__, cli
from pman.errors import ConfigError
from pman.telemetry import configure_logging

__all__ = ["configure_logging", "main"]


def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve with granian's RSGI interface: HTTP parsing and connections are
    handled in Rust, waiting (slow bodies, log streams, engine calls) costs no
    request thread, and each kind of work gets threads of its own
    (pman.api.bridge, pman.api.rsgi). Settings are checked first so a bad variable stops us
    with one clear message instead of one per worker.
    """
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    from pman.settings import load_serve_settings, load_settings
    from pman.settings.core import early_logging

    settings = load_settings()
    options = load_serve_settings()
    if settings.resource.container_env == "local":
        from pman.backends import load_backend

        # the embedded default checks its sandbox at start-up (bwrap installed,
        # user namespaces allowed): refuse here once, not in every worker
        load_backend("local", settings)
    # before any process of ours imports prometheus-client (granian forks the
    # workers from this one): they and the tracker write their metrics there,
    # and a scrape adds them all up
    metrics_dir, made_metrics_dir = _prepare_metrics_dir(options.metrics_dir)
    os.environ[METRICS_DIR_ENV] = metrics_dir
    tracker = _start_tracker_process(settings)

    class _Server(Server):  # type: ignore[misc,valid-type]
        def _init_shared_socket(self) -> None:
            # Each worker listens on its own socket bound to the same port
            # (SO_REUSEPORT: the kernel spreads connections over the workers).
            # With port 0 granian would announce port 0 and drop the port it
            # found: keep that port bound here (not listening: it takes no
            # connections) for the server's life, and announce it.
            super()._init_shared_socket()
            if self._ssp is not None and self.bind_port == 0:
                self._pman_port = self._ssp.build()
                self.bind_port = self._ssp.__getstate__()[1]

    # granian's few lines of its own (where it listens, its workers) are always
    # shown; the access log is pman's own (pman.api.observe), in pman's format
    level, log_format = early_logging(os.environ)
    server = _Server(
        "pman.rsgi:application",
        address=options.host if host is None else host,
        port=options.port if port is None else port,
        interface=Interfaces.RSGI,
        workers=options.workers if workers is None else workers,
        log_level=LogLevels.debug if level == "DEBUG" else LogLevels.info,
        log_dictconfig=_granian_logging(log_format),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=60,
    )
    try:
        server.serve()
    finally:
        if tracker is not None:
            tracker.terminate()
            tracker.wait(timeout=30)
        if made_metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


#: prometheus-client's multiprocess mode: where each process writes its values
#: (ServeSettings.metrics_dir; set for the processes pman serve starts)
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _prepare_metrics_dir(given: str | None) -> tuple[str, bool]:
    """The folder pman's processes share their metrics in, emptied of an earlier
    run's files: the operator's PROMETHEUS_MULTIPROC_DIR, else a new temporary
    folder (local: the values are mmap-ed files, not for a network filesystem).
    Returns it and whether pman made it (and removes it at exit)."""
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        return str(folder), False
    return tempfile.mkdtemp(prefix="pman-metrics-"), True


def _granian_logging(fmt: str) -> dict[str, Any]:
    """granian's own messages on stderr in pman's format (JSON or text)."""
    generic: dict[str, Any] = (
        {"()": "pman.telemetry.JsonFormatter", "logger_name": "granian"}
        if fmt == "json"
        else {
            "()": "logging.Formatter",
            "fmt": "[%(asctime)s] %(levelname)s granian %(process)d: %(message)s",
        }
    )
    return {
        "formatters": {
            "generic": generic,
            "access": {"()": "logging.Formatter", "fmt": "%(message)s"},
        },
        "handlers": {
            "console": {
                "formatter": "generic",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
            },
        },
    }


def _start_tracker_process(settings: Any) -> subprocess.Popen[bytes] | None:
    """The tracker in a process of its own, leading before the workers start."""
    if not settings.core.tracker_enabled:
        return None
    # -P: the installed pman, never a folder named pman where serve was started
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "pman", "track", "--exit-with", str(os.getpid())]
    )
    lock = Path(str(settings.registry.database_url).removeprefix("sqlite:///") + ".tracker.lock")
    deadline = time.monotonic() + 10
    while settings.registry.database_url.startswith("sqlite") and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if lock.read_text().strip() == str(proc.pid):
                break
        if proc.poll() is not None:
            break  # it failed; the workers' trackers will lead instead
        time.sleep(0.05)
    return proc


def track(exit_with: int | None = None) -> None:
    """Run the tracker alone, in the foreground, until SIGTERM or SIGINT.

    ``pman serve`` starts one so that tracking never competes with requests
    for a worker's GIL; the workers' own trackers stay on standby behind the
    registry's lock and take over if this process dies.
    """
    import signal
    import threading

    from pman.registry import Registry
    from pman.resources import build_runtimes
    from pman.settings import load_settings
    from pman.tracker import Tracker

    settings = load_settings()
    if settings.registry.database_url.startswith("sqlite"):
        settings.core.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry.from_url(settings.registry.database_url)
    registry.configure_webhooks(settings.webhooks.url)
    runtimes = build_runtimes(settings)
    tracker = Tracker.for_resources(registry, runtimes, settings)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    tracker.start()
    logging.getLogger(__name__).info(
        "tracker running for %s",
        ", ".join(f"{r.name} ({r.backend.describe()})" for r in runtimes),
    )
    # started by `pman serve`: end with it, even if it is killed without warning
    while not done.wait(1.0):
        if exit_with is not None and os.getppid() != exit_with:
            break
    tracker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pman", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pman {__version__}")
    cli.add_connection_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP service (configured by environment)")
    # their defaults: PMAN_HOST, PMAN_PORT, PMAN_WORKERS (pman.settings.server.ServeSettings)
    p_serve.add_argument("--host", help="address to listen on (default: PMAN_HOST)")
    p_serve.add_argument("--port", type=int, help="port to listen on (default: PMAN_PORT)")
    p_serve.add_argument("--workers", type=int, help="worker processes (default: PMAN_WORKERS)")
    p_serve.add_argument(
        "--threads",
        type=int,
        help="threads per worker for quick requests (sets PMAN_THREADS)",
    )
    p_track = sub.add_parser("track", help="run only the tracker (pman serve starts one itself)")
    p_track.add_argument("--exit-with", type=int, help="stop when this parent process ends")
    p_doctor = sub.add_parser(
        "doctor",
        help="check this machine's pman configuration, engines, registry and clock",
        description="Run on the server's machine with the server's environment: exit 0 when "
        "every check passes, 1 when one finds a problem, 2 for a usage error.",
    )
    p_doctor.add_argument("--json", action="store_true", help="findings as a JSON list")
    p_doctor.add_argument(
        "--submit-test",
        action="store_true",
        help="SLURM: submit a tiny batch job to prove a compute node sees pman's folders",
    )
    p_doctor.add_argument("--resource", help="check this resource only (and the registry)")
    p_doctor.add_argument(
        "--timeout", type=float, default=10.0, help="seconds each check may take (default 10)"
    )
    cli.add_commands(sub)
    args = parser.parse_args(argv)
    if args.command in cli.COMMANDS:
        sys.exit(cli.run(args))
    if args.command == "doctor":
        from pman.doctor import main as doctor

        sys.exit(
            doctor(
                as_json=args.json,
                submit_test=args.submit_test,
                resource=args.resource,
                timeout=args.timeout,
            )
        )
    configure_logging()
    try:
        if args.command == "serve":
            if args.threads is not None:
                os.environ["PMAN_THREADS"] = str(args.threads)
            serve(args.host, args.port, args.workers)
        elif args.command == "track":
            track(args.exit_with)
    except ConfigError as e:
        print(f"pman: {e.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
