"""``pman`` / ``python -m pman``: run the service."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pman import __version__
from pman.errors import ConfigError


def configure_logging() -> None:
    level = os.environ.get("PMAN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format="[%(asctime)s] %(levelname)s %(name)s %(process)d: %(message)s",
    )


def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve with gunicorn. Settings are checked first so a bad variable stops us
    with one clear message instead of one per worker."""
    from gunicorn.app.base import BaseApplication

    from pman.app import create_app
    from pman.settings import load_settings

    settings = load_settings()
    tracker = _start_tracker_process(settings)

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            if os.environ.get("PMAN_ACCESS_LOG", "yes").lower() not in ("0", "no", "false", "off"):
                self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return create_app(settings)

    try:
        _Server().run()
    finally:
        if tracker is not None:
            tracker.terminate()
            tracker.wait(timeout=30)


def _start_tracker_process(settings: Any) -> subprocess.Popen[bytes] | None:
    """The tracker in a process of its own, leading before the workers start."""
    if not settings.tracker_enabled:
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "pman", "track", "--exit-with", str(os.getpid())]
    )
    lock = Path(str(settings.database_url).removeprefix("sqlite:///") + ".tracker.lock")
    deadline = time.monotonic() + 10
    while settings.database_url.startswith("sqlite") and time.monotonic() < deadline:
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

    from pman.backends import load_backend
    from pman.registry import Registry
    from pman.settings import load_settings
    from pman.tracker import Tracker

    settings = load_settings()
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry.from_url(settings.database_url)
    backend = load_backend(settings.container_env, settings)
    tracker = Tracker(
        registry, backend, logs_tail=settings.job_logs_tail, interval=settings.tracker_interval
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    tracker.start()
    logging.getLogger(__name__).info("tracker running for %s", backend.describe())
    # started by `pman serve`: end with it, even if it is killed without warning
    while not done.wait(1.0):
        if exit_with is not None and os.getppid() != exit_with:
            break
    tracker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pman", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pman {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP service (configured by environment)")
    p_serve.add_argument("--host", default=os.environ.get("PMAN_HOST", "127.0.0.1"))
    p_serve.add_argument("--port", type=int, default=int(os.environ.get("PMAN_PORT", "5010")))
    p_serve.add_argument("--workers", type=int, default=int(os.environ.get("PMAN_WORKERS", "2")))
    p_serve.add_argument("--threads", type=int, default=int(os.environ.get("PMAN_THREADS", "8")))
    p_track = sub.add_parser("track", help="run only the tracker (pman serve starts one itself)")
    p_track.add_argument("--exit-with", type=int, help="stop when this parent process ends")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        if args.command == "serve":
            serve(args.host, args.port, args.workers, args.threads)
        elif args.command == "track":
            track(args.exit_with)
    except ConfigError as e:
        print(f"pman: {e.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
