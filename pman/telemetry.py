"""pman's logs: one JSON object per line (or plain text), with the request and
job they are about.

The request id and the jid live in context variables: the HTTP layer sets the
request id for the time of a request, the service and the tracker set the jid
of the job they work on, and every log line written meanwhile carries them,
whichever module writes it. Nothing here knows HTTP or an engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

#: the id of the HTTP request being answered ("" outside a request)
REQUEST_ID: ContextVar[str] = ContextVar("pman_request_id", default="")
#: the job being worked on ("" when none)
JID: ContextVar[str] = ContextVar("pman_jid", default="")

#: fields a log call may add with ``extra=``, in the order they are written
EXTRA_FIELDS = ("method", "route", "path", "status", "duration_ms", "remote")
_TEXT_FORMAT = "[%(asctime)s] %(levelname)s %(name)s %(process)d: %(message)s"


@contextlib.contextmanager
def job_context(jid: str) -> Iterator[None]:
    """Log lines written inside carry ``jid``."""
    token = JID.set(jid)
    try:
        yield
    finally:
        JID.reset(token)


_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = REQUEST_ID.get()
    record.jid = JID.get()
    return record


def install_record_factory() -> None:
    """Every log record made from now on carries the request id and jid of its
    context (whichever handler then writes it). Idempotent."""
    if logging.getLogRecordFactory() is not _record_with_context:
        global _base_factory
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_record_with_context)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "pid", "jid", "request_id", ...}``,
    one object per line; empty context fields are left out."""

    def __init__(self, logger_name: str | None = None) -> None:
        super().__init__()
        #: written instead of the record's logger name (granian's own loggers)
        self.logger_name = logger_name

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": self.logger_name or record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key in ("jid", "request_id"):
            value = getattr(record, key, "")
            if value:
                out[key] = value
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """pman's plain format, with the request id and jid when there are."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [
            f"{key}={value}" for key in ("request_id", "jid") if (value := getattr(record, key, ""))
        ]
        return f"{text} [{' '.join(tags)}]" if tags else text


def log_format(environ: dict[str, str] | None = None) -> str:
    """PMAN_LOG_FORMAT, as declared in pman.settings.core (an invalid value is
    reported by load_settings; here it falls back to the default)."""
    from pman.settings.core import early_logging  # not for the client's commands

    return early_logging(os.environ if environ is None else environ)[1]


def make_formatter(fmt: str, logger_name: str | None = None) -> logging.Formatter:
    return JsonFormatter(logger_name) if fmt == "json" else TextFormatter()


#: the per-request lines of pman.api.observe (PMAN_ACCESS_LOG)
ACCESS_LOGGER = "pman.access"


def configure_logging() -> None:
    """Root logging on stderr in the format PMAN_LOG_FORMAT chooses, at
    PMAN_LOG_LEVEL; access lines on stdout, in the same format."""
    from pman.settings.core import early_logging  # not for the client's commands

    install_record_factory()
    level, fmt = early_logging(os.environ)
    formatter = make_formatter(fmt)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.handlers:
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(formatter)
        access.addHandler(out)
        access.propagate = False
        # PMAN_LOG_LEVEL=WARNING must not silence the access log the operator asked for
        access.setLevel(logging.INFO)
