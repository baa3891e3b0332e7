"""Request and response models of the v1 API (pydantic v2).

They validate every request and are the source of the OpenAPI document, so
the document always says what the service checks.
"""

from __future__ import annotations

import re
import unicodedata
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

from pman.settings.webhooks import MAX_URL_LENGTH, check_webhook_url

# ASCII only, as the document's pattern says: Python's \d also matches other
# scripts' digits and \s other spaces, which JSON Schema's patterns need not
_INT_TEXT = re.compile(r"[ \t\n\r]*\+?[0-9]+[ \t\n\r]*")


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


def _int_text_pattern(minimum: int) -> str:
    """The integer strings the validator accepts that are >= ``minimum`` (0 or 1)."""
    digits = "[0-9]+" if minimum <= 0 else "0*[1-9][0-9]*"
    return rf"^[ \t\n\r]*\+?{digits}[ \t\n\r]*$"


#: the largest integer a request field takes: engines multiply CPU and memory
#: into 64-bit bytes and nano-CPUs, and per-site caps (PMAN_MAX_*) bound them further
INT_MAX = 2**31 - 1
#: static bounds of the request (the configurable ones are in pman.limits)
JID_MAX = 128
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
                    {"type": "string", "pattern": _int_text_pattern(minimum)},
                ],
                "description": unit,
            }
        ),
    ]


#: text that can pass into an argv, an environment or a label: no NUL
Text = Annotated[StrictStr, Field(pattern=r"^[^\x00]*$")]
#: ``KEY=value`` with a name the shell can read
EnvEntry = Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*=[^\x00]*$")]
#: upstream strips a leading '/'; the engine's own rule (e.g. Docker's 2 to 128
#: characters) is checked after that and may be stricter
JID_PATTERN = r"^/*[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: a ChRIS user name (Django's username characters, ASCII), never a path
AUID_PATTERN = r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]{0,149}$"
#: an image reference or (SLURM with apptainer) an image file: no spaces,
#: control characters or NUL; checked further by _image
IMAGE_PATTERN = r"^[^\x00-\x20\x7f]{1,1024}$"


def _plain(value: str) -> str | None:
    """Why ``value`` could look like something else to a person or another
    program, or None: unicode a later NFKC normalisation would change
    (fullwidth dots and slash, U+FF0E U+FF0F, become ../), format characters
    (right-to-left override, zero-width joiners), control characters and
    unpaired surrogates."""
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cs":
            return "must not contain unpaired surrogates"
        if category in ("Cc", "Cf"):
            return f"must not contain control or format characters (U+{ord(ch):04X})"
    if unicodedata.normalize("NFKC", value) != value:
        return "must be in Unicode normal form NFKC (no fullwidth or decomposed look-alikes)"
    return None


class JobRequest(BaseModel):
    """POST /api/v1/ body: one job, as upstream pman accepts it."""

    model_config = ConfigDict(extra="forbid", title="JobRequest")

    jid: StrictStr = Field(
        min_length=1,
        max_length=JID_MAX,
        pattern=JID_PATTERN,
        description="job name; a leading '/' is stripped; the backend may allow fewer "
        "characters (swarm and kubernetes: 63)",
    )
    args: list[Text] = Field(
        description="plugin arguments; at most PMAN_MAX_ARGS (default 1000) of at most "
        "PMAN_MAX_ARG_LENGTH (default 4096) characters each"
    )
    args_path_flags: list[Text] = Field(
        default_factory=list,
        description="flags whose following argument is a path, replaced by /share/incoming; "
        "bounded as args",
    )
    auid: StrictStr = Field(pattern=AUID_PATTERN, description="user id of the requester")
    number_of_workers: _whole(1, "parallel workers")  # type: ignore[valid-type]
    cpu_limit: _whole(1, "CPU limit in millicores (1000 = one CPU)")  # type: ignore[valid-type]
    memory_limit: _whole(1, "memory limit in mebibytes (MiB)")  # type: ignore[valid-type]
    gpu_limit: _whole(0, "number of GPUs")  # type: ignore[valid-type]
    image: StrictStr = Field(
        max_length=IMAGE_MAX,
        pattern=IMAGE_PATTERN,
        description="OCI image; must match PMAN_IMAGE_ALLOWLIST when the site sets one",
    )
    entrypoint: list[Text] = Field(
        min_length=1,
        description="command prefix; the first element names the program; bounded as args",
        json_schema_extra={"prefixItems": [{"type": "string", "minLength": 1}]},
    )
    type: Literal["ds", "fs", "ts"] = Field(description="plugin type")
    env: list[EnvEntry] = Field(
        default_factory=list,
        description='"KEY=value" strings; at most PMAN_MAX_ENV (default 500) of at most '
        "PMAN_MAX_ENV_LENGTH (default 32768) characters each",
    )
    input_dir: Text = Field(max_length=PATH_MAX, description="input folder, relative to STOREBASE")
    output_dir: Text = Field(
        max_length=PATH_MAX, description="output folder, relative to STOREBASE"
    )
    callback_url: StrictStr | None = Field(
        default=None,
        max_length=MAX_URL_LENGTH,
        description="pman's extension (upstream clients never send it): an http(s) URL every "
        "state transition of the job is POSTed to, signed (see the README's Webhooks); its "
        "host must be allowed by PMAN_WEBHOOK_ALLOWED_HOSTS",
    )
    compute_resource: StrictStr | None = Field(
        default=None,
        max_length=63,
        description="pman's extension: the compute resource to run the job on (one of "
        "PMAN_RESOURCES, GET /api/v1/resources/); without it, the first resource that can "
        "run the job (and, where PMAN_OVERFLOW allows, the next one with room)",
    )

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        # a NUL cannot pass into an argv, an environment or a path; a lone
        # surrogate cannot be encoded for any of them
        for item in v if isinstance(v, list) else [v]:
            if not isinstance(item, str):
                continue
            if "\x00" in item:
                raise ValueError("must not contain NUL characters")
            if any(0xD800 <= ord(ch) <= 0xDFFF for ch in item):
                raise ValueError("must not contain unpaired surrogates")
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

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if ".." in v.split("/"):
            raise ValueError("must not contain a '..' path component")
        if why := _plain(v):
            raise ValueError(why)
        return v

    @field_validator("input_dir", "output_dir")
    @classmethod
    def _plain_path(cls, v: str) -> str:
        # '..', length and confinement are checked by pman.storage, for every
        # storage type; here: names that would read differently elsewhere
        if why := _plain(v):
            raise ValueError(why)
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
    compute_resource: str = Field(
        description="pman's extension: the compute resource the job runs on"
    )


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


class ResourceHealth(BaseModel):
    model_config = ConfigDict(title="ResourceHealth")

    backend: str
    healthy: bool
    problem: str | None


class Health(BaseModel):
    model_config = ConfigDict(title="Health")

    status: Literal["ok", "unavailable"]
    backend: str
    message: str
    resources: dict[str, ResourceHealth] = Field(
        description="each compute resource's engine: 503 only when the registry or every "
        "resource is down"
    )


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
    compute_resource: str = Field(
        default="default", description="the compute resource the job runs on"
    )


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
    compute_resource: str = Field(
        default="default", description="the compute resource the job runs on"
    )


class ResourceCapabilities(BaseModel):
    model_config = ConfigDict(title="ResourceCapabilities")

    gpus: bool = Field(description="its backend can give jobs GPUs")
    max_workers: int | None = Field(
        description="the most workers a job may have there; null: any number"
    )
    array_workers: bool = Field(description="several workers run as one engine job")


class ResourceCaps(BaseModel):
    model_config = ConfigDict(title="ResourceCaps")

    max_running: int = Field(description="PMAN_MAX_RUNNING (0: no limit)")
    max_cpu_limit: int | None
    max_memory_limit: int | None
    max_gpu_limit: int | None
    max_workers: int | None
    image_allowlist: list[str]


class ComputeResource(BaseModel):
    model_config = ConfigDict(title="ComputeResource")

    name: str
    backend: str = Field(description="its CONTAINER_ENV")
    description: str = Field(description="its PMAN_RESOURCE_DESCRIPTION")
    capabilities: ResourceCapabilities
    caps: ResourceCaps
    running: int = Field(description="jobs pman has on its engine")
    queued: int = Field(description="jobs waiting in its queue (PMAN_MAX_RUNNING)")
    healthy: bool = Field(description="its engine answers")
    problem: str | None = Field(description="why it is not healthy")


class ComputeResources(BaseModel):
    model_config = ConfigDict(title="ComputeResources")

    resources: list[ComputeResource] = Field(description="in PMAN_RESOURCES order")


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
