"""Request and response models of the v1 API (pydantic v2).

They validate every request and are the source of the OpenAPI document, so
the document always says what the service checks.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    field_validator,
)

from pman.webhooks import MAX_URL_LENGTH, check_webhook_url

_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")


def _whole_number(value: Any) -> int:
    """Integers, and integer-valued strings as upstream clients send them ("1000")."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError("must be a whole number, not a fraction")
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    if value is None:
        raise ValueError("must be an integer, not null")
    raise ValueError("must be an integer or an integer-valued string")


#: the largest integer a request field takes: engines multiply CPU and memory
#: into 64-bit bytes and nano-CPUs, and per-site caps (PMAN_MAX_*) bound them further
INT_MAX = 2**31 - 1
#: static bounds of the request (the configurable ones are in pman.limits)
JID_MAX = 128
AUID_MAX = 255
IMAGE_MAX = 512
PATH_MAX = 4096


def _whole(minimum: int, unit: str) -> Any:
    return Annotated[
        int,
        BeforeValidator(_whole_number),
        Field(ge=minimum, le=INT_MAX, description=unit),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": minimum, "maximum": INT_MAX},
                    {"type": "string", "pattern": r"^\s*\+?\d+\s*$"},
                ],
                "description": unit,
            }
        ),
    ]


_ENV_ENTRY = re.compile(r"[^=\x00]+=[^\x00]*", re.DOTALL)


class JobRequest(BaseModel):
    """POST /api/v1/ body: one job, as upstream pman accepts it."""

    model_config = ConfigDict(extra="forbid", title="JobRequest")

    jid: StrictStr = Field(
        min_length=1,
        max_length=JID_MAX,
        description="job name; a leading '/' is stripped; the backend may allow fewer "
        "characters (swarm and kubernetes: 63)",
    )
    args: list[StrictStr] = Field(
        description="plugin arguments; at most PMAN_MAX_ARGS (default 1000) of at most "
        "PMAN_MAX_ARG_LENGTH (default 4096) characters each"
    )
    args_path_flags: list[StrictStr] = Field(
        default_factory=list,
        description="flags whose following argument is a path, replaced by /share/incoming; "
        "bounded as args",
    )
    auid: StrictStr = Field(max_length=AUID_MAX, description="user id of the requester")
    number_of_workers: _whole(1, "parallel workers")  # type: ignore[valid-type]
    cpu_limit: _whole(1, "CPU limit in millicores (1000 = one CPU)")  # type: ignore[valid-type]
    memory_limit: _whole(1, "memory limit in mebibytes (MiB)")  # type: ignore[valid-type]
    gpu_limit: _whole(0, "number of GPUs")  # type: ignore[valid-type]
    image: StrictStr = Field(
        min_length=1,
        max_length=IMAGE_MAX,
        description="OCI image; must match PMAN_IMAGE_ALLOWLIST when the site sets one",
    )
    entrypoint: list[StrictStr] = Field(min_length=1, description="command prefix; bounded as args")
    type: Literal["ds", "fs", "ts"] = Field(description="plugin type")
    env: list[StrictStr] = Field(
        default_factory=list,
        description='"KEY=value" strings; at most PMAN_MAX_ENV (default 500) of at most '
        "PMAN_MAX_ENV_LENGTH (default 32768) characters each",
    )
    input_dir: StrictStr = Field(
        max_length=PATH_MAX, description="input folder, relative to STOREBASE"
    )
    output_dir: StrictStr = Field(
        max_length=PATH_MAX, description="output folder, relative to STOREBASE"
    )
    callback_url: StrictStr | None = Field(
        default=None,
        max_length=MAX_URL_LENGTH,
        description="pman's extension (upstream clients never send it): an http(s) URL every "
        "state transition of the job is POSTed to, signed (see the README's Webhooks); its "
        "host must be allowed by PMAN_WEBHOOK_ALLOWED_HOSTS",
    )

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # a NUL cannot pass into an argv, an environment or a path
        if (isinstance(v, str) and "\x00" in v) or (
            isinstance(v, list) and any("\x00" in item for item in v)
        ):
            raise ValueError("must not contain NUL characters")
        return v

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, v: str | None) -> str | None:
        return None if v is None else check_webhook_url(v)

    @field_validator("jid")
    @classmethod
    def _strip_jid(cls, v: str) -> str:
        v = v.lstrip("/")
        if not v:
            raise ValueError("must not be empty (after stripping a leading '/')")
        return v

    @field_validator("env")
    @classmethod
    def _env_entries(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not _ENV_ENTRY.fullmatch(e)]
        if bad:
            raise ValueError(f"every entry must be KEY=value with a non-empty KEY; got {bad[0]!r}")
        return v

    @field_validator("entrypoint")
    @classmethod
    def _program_named(cls, v: list[str]) -> list[str]:
        if not v[0]:
            raise ValueError("the first element names the program and must not be empty")
        return v


JobStatus = Literal[
    "notstarted", "started", "finishedSuccessfully", "finishedWithError", "undefined"
]


class Job(BaseModel):
    """A job as upstream pman describes it."""

    model_config = ConfigDict(title="Job")

    jid: str
    image: str
    cmd: str = Field(description="the command as one shell-quoted string")
    status: JobStatus
    message: str
    timestamp: str = Field(description="ISO 8601 time of the latest state change")
    logs: str = Field(description="the last JOB_LOGS_TAIL lines of output")


class ServerInfo(BaseModel):
    model_config = ConfigDict(title="ServerInfo")

    server_version: str
    container_env: str
    storage_type: str


class Error(BaseModel):
    model_config = ConfigDict(title="Error")

    message: str = Field(description="what went wrong, in words")
    fields: dict[str, str] | None = Field(
        default=None, description="offending request fields, each with its problem"
    )


class Health(BaseModel):
    model_config = ConfigDict(title="Health")

    status: Literal["ok", "unavailable"]
    backend: str
    message: str


class JobSummary(BaseModel):
    """A job of the registry, for lists."""

    model_config = ConfigDict(title="JobSummary")

    jid: str
    status: JobStatus
    state: Literal[
        "queued", "running", "succeeded", "failed", "system_error", "cancelled", "unknown"
    ] = Field(description="pman's own state, finer than status")
    message: str
    exit_code: int | None
    reason: str
    image: str
    cmd: str
    auid: str
    labels: dict[str, str]
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    deleted_at: str | None


class JobList(BaseModel):
    model_config = ConfigDict(title="JobList")

    jobs: list[JobSummary]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null at the end"
    )


class JobEvent(BaseModel):
    model_config = ConfigDict(title="JobEvent")

    at: str = Field(description="ISO 8601 time of the transition")
    state: str
    status: JobStatus
    message: str


class JobEvents(BaseModel):
    model_config = ConfigDict(title="JobEvents")

    jid: str
    events: list[JobEvent]


class WebhookDelivery(BaseModel):
    model_config = ConfigDict(title="WebhookDelivery")

    event_id: str = Field(description="X-Pman-Event-Id of the transition's deliveries")
    event_state: str = Field(description="the pman state the transition entered")
    target: Literal["callback", "global"] = Field(
        description="the job's callback_url, or the global PMAN_WEBHOOK_URL"
    )
    url: str | None = Field(description="the callback_url; null for the global hook")
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str = Field(description="why the last attempt failed; empty once delivered")
    created_at: str
    next_attempt_at: str | None = Field(description="when a pending delivery is tried next")
    finished_at: str | None = Field(description="when it was delivered or given up")


class WebhookDeliveries(BaseModel):
    model_config = ConfigDict(title="WebhookDeliveries")

    jid: str
    deliveries: list[WebhookDelivery]


class AuthTokenRequest(BaseModel):
    """pfcon-style login: the configured PMAN_AUTH_USER and PMAN_AUTH_PASSWORD."""

    model_config = ConfigDict(extra="forbid", title="AuthTokenRequest")

    pman_user: str = Field(min_length=1, max_length=256)
    pman_password: str = Field(min_length=1, max_length=1024)


class AuthToken(BaseModel):
    model_config = ConfigDict(title="AuthToken")

    token: str = Field(description="send as Authorization: Bearer <token>")
