"""``pman`` / ``python -m pman``: run the service."""

from __future__ import annotations

import argparse
import logging
import os
import sys
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

    _Server().run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pman", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pman {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP service (configured by environment)")
    p_serve.add_argument("--host", default=os.environ.get("PMAN_HOST", "127.0.0.1"))
    p_serve.add_argument("--port", type=int, default=int(os.environ.get("PMAN_PORT", "5010")))
    p_serve.add_argument("--workers", type=int, default=int(os.environ.get("PMAN_WORKERS", "2")))
    p_serve.add_argument("--threads", type=int, default=int(os.environ.get("PMAN_THREADS", "8")))
    args = parser.parse_args(argv)
    configure_logging()
    try:
        if args.command == "serve":
            serve(args.host, args.port, args.workers, args.threads)
    except ConfigError as e:
        print(f"pman: {e.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
