"""What every part of pman shares: the mode, its own folder, logs, the tracker's pace."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import field_validator

from pman.settings.declare import Env, Environ, Section

APPLICATION_MODES = ("production", "development")
LOG_FORMATS = ("json", "text")


def default_data_dir(environ: Environ) -> str:
    """``$XDG_DATA_HOME/pman``, ``~/.local/share/pman`` without it."""
    home = environ.get("HOME")
    base = environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~") if home is None else home, ".local", "share"
    )
    return os.path.join(base, "pman")


def default_log_format(environ: Environ) -> str:
    return "text" if environ.get("APPLICATION_MODE") == "development" else "json"


class CoreSettings(Section):
    """Settings every part of pman shares."""

    title = "core"

    application_mode: Annotated[
        str,
        Env(
            "APPLICATION_MODE",
            "`production` checks that secrets and tokens are long enough; `development` "
            "does not, and changes the default of `PMAN_LOG_FORMAT`",
            choices=APPLICATION_MODES,
        ),
    ] = "production"
    data_dir: Annotated[
        Path,
        Env(
            "PMAN_DATA_DIR",
            "pman's own state: the SQLite registry, the local backend's job folders",
            default_from=default_data_dir,
            default_doc="`$XDG_DATA_HOME/pman`, else `~/.local/share/pman`",
        ),
    ]
    engine_timeout: Annotated[
        float,
        Env(
            "PMAN_ENGINE_TIMEOUT",
            "seconds from a POST, DELETE or cancel's arrival to its answer at the latest: 503 "
            "when the engine has not answered by then (see [Availability](../README.md"
            "#availability-work-that-may-wait-never-starves-polls)); also the client timeout "
            "of each engine call",
            ge=0.1,
        ),
    ] = 30.0
    log_level: Annotated[
        str,
        Env(
            "PMAN_LOG_LEVEL",
            "log level (`DEBUG`, `INFO`, `WARNING`, `ERROR`); read when logging starts, "
            "before the other settings",
        ),
    ] = "INFO"
    log_format: Annotated[
        str,
        Env(
            "PMAN_LOG_FORMAT",
            "`json`: every log line (pman's, granian's, the access log) is one JSON object "
            "(see [Observability](../README.md#observability)); `text`: `[time] LEVEL logger "
            "pid: message [request_id=... jid=...]`",
            choices=LOG_FORMATS,
            default_from=default_log_format,
            default_doc="`json` in production, `text` when `APPLICATION_MODE=development`",
        ),
    ]
    access_log: Annotated[
        bool,
        Env(
            "PMAN_ACCESS_LOG",
            "one access-log line per request (logger `pman.access`, on stdout, in "
            "`PMAN_LOG_FORMAT`; written by pman, granian's own access log is off)",
        ),
    ] = True
    tracker_enabled: Annotated[
        bool,
        Env(
            "PMAN_TRACKER",
            "run the tracker that follows the engine; `no` only for tests that drive "
            "the tracker themselves",
        ),
    ] = True
    tracker_interval: Annotated[
        float,
        Env(
            "PMAN_TRACKER_INTERVAL",
            "seconds between tracker cycles while jobs are unfinished, on engines without "
            "an event stream",
            ge=0.01,
        ),
    ] = 0.5
    logs_refresh_seconds: Annotated[
        float,
        Env(
            "PMAN_LOGS_REFRESH_SECONDS",
            "how often (seconds) the tracker refreshes the stored logs of each running job",
            ge=0.1,
        ),
    ] = 2.0

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return Path(os.path.abspath(value))


def early_logging(environ: Mapping[str, str]) -> tuple[str, str]:
    """PMAN_LOG_LEVEL and PMAN_LOG_FORMAT for logging that starts before the
    settings are loaded (so that bad settings can be logged): a format that is
    not one of LOG_FORMATS falls back to its default (load_settings reports it)."""
    env = Environ(environ)
    level = env.get("PMAN_LOG_LEVEL")
    if level is None:
        level = CoreSettings.default_of("log_level")
    chosen = env.get("PMAN_LOG_FORMAT") or ""
    return level.upper(), chosen if chosen in LOG_FORMATS else default_log_format(env)
