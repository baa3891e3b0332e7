"""The HTTP service: kinds of work kept apart (pman.api.lanes, pman.api.asgi),
request sizes and times; and what ``pman serve`` listens on."""

from __future__ import annotations

from typing import Annotated

from pman.settings.declare import Env, Section


class ServerSettings(Section):
    """How each process of the service shares its threads between kinds of work
    (see [Availability](../README.md#availability-work-that-may-wait-never-starves-polls))."""

    title = "server"

    quick_threads: Annotated[
        int,
        Env(
            "PMAN_THREADS",
            "threads per process for quick requests (polls, listing, events, health, login, "
            "documents, metrics); engine requests and log streams have threads of their own "
            "(`pman serve --threads` sets it too)",
            ge=1,
            le=256,
        ),
    ] = 4
    max_engine_calls: Annotated[
        int,
        Env(
            "PMAN_MAX_ENGINE_CALLS",
            "requests per process in an engine call at once (POST, DELETE, cancel); more wait "
            "for a turn until their `PMAN_ENGINE_TIMEOUT`, then 503 (at most 4 waiting per "
            "slot; more are 503 at once)",
            ge=1,
            le=1024,
        ),
    ] = 8
    max_log_streams: Annotated[
        int,
        Env(
            "PMAN_MAX_LOG_STREAMS",
            "`GET .../logs/` responses per process at once; one more is 429 at once",
            ge=0,
            le=10000,
        ),
    ] = 100
    max_log_streams_per_client: Annotated[
        int,
        Env(
            "PMAN_MAX_LOG_STREAMS_PER_CLIENT",
            "the same per client (bearer token; client address without one) and process",
            ge=0,
            le=10000,
        ),
    ] = 20
    log_stream_idle_timeout: Annotated[
        float,
        Env(
            "PMAN_LOG_STREAM_IDLE_TIMEOUT",
            "seconds a log stream may pass no data before pman ends it",
            ge=1.0,
        ),
    ] = 300.0
    body_timeout: Annotated[
        float,
        Env(
            "PMAN_BODY_TIMEOUT",
            "seconds a request's body may take to arrive in full; 408 after it (`pman serve` "
            "only: a WSGI server reads bodies itself)",
            ge=0.1,
            le=3600,
        ),
    ] = 30.0
    max_request_bytes: Annotated[
        int,
        Env(
            "PMAN_MAX_REQUEST_BYTES",
            "the largest request body (1048576 is 1 MiB); a bigger one is 413 with a JSON "
            "message, refused from its `Content-Length` before it is read, or when a chunked "
            "body passes the limit",
            ge=1024,
        ),
    ] = 1024 * 1024


class ServeSettings(Section):
    """What `pman serve` listens on and runs: read by that command alone, as the
    defaults of its options (not by an application a WSGI server builds)."""

    title = "pman serve"

    host: Annotated[str, Env("PMAN_HOST", "the address to listen on (`--host`)")] = "127.0.0.1"
    port: Annotated[int, Env("PMAN_PORT", "the port to listen on (`--port`)")] = 5010
    workers: Annotated[int, Env("PMAN_WORKERS", "worker processes (`--workers`)")] = 2
    metrics_dir: Annotated[
        str | None,
        Env(
            "PROMETHEUS_MULTIPROC_DIR",
            "where `pman serve`'s processes (workers and tracker) write their metrics for "
            "`/metrics` to add up; emptied at start, and removed at exit when pman made it. "
            "Must be a local filesystem. Set it under gunicorn with several workers (see "
            "[Observability](../README.md#observability))",
            default_doc="a new temporary folder per `pman serve`",
            blank_is_unset=True,
        ),
    ] = None
