"""Configuration from environment variables, read once at start-up.

Every variable is checked and every problem is reported together in one
:class:`~pman.errors.ConfigError`; loading never touches the network.
Names follow upstream pman (see README for the full table).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from environs import Env, EnvValidationError
from marshmallow.validate import OneOf, Range

from pman.errors import ConfigError
from pman.limits import Limits, parse_capabilities, parse_image_allowlist

CONTAINER_ENVS = ("local", "docker", "podman", "swarm", "kubernetes", "slurm", "cromwell")
STORAGE_TYPES = ("host", "nfs", "docker_local_volume", "kubernetes_pvc")
#: shortest PMAN_WEBHOOK_SECRET accepted in production
MIN_WEBHOOK_SECRET_LENGTH = 32
DEFAULT_DOCKER_HOSTS = {
    "docker": "unix:///var/run/docker.sock",
    "podman": "unix:///run/podman/podman.sock",
    "swarm": "unix:///var/run/docker.sock",
}


@dataclass(frozen=True)
class IdRange:
    """A UID or GID given as a number or an inclusive range ``lo-hi``."""

    lo: int
    hi: int

    def pick(self) -> int:
        """A value from the range: a range spreads jobs over several ids, as upstream."""
        return self.lo if self.lo == self.hi else random.randint(self.lo, self.hi)


@dataclass(frozen=True)
class ContainerUser:
    """CONTAINER_USER as ``UID:GID``, either side may be a range or empty."""

    uid: IdRange | None = None
    gid: IdRange | None = None

    @classmethod
    def parse(cls, value: str) -> ContainerUser:
        if not value:
            return cls()
        parts = value.split(":")
        if len(parts) != 2:
            raise ValueError(f"{value!r} is not of the form UID:GID (each may be a range lo-hi)")
        return cls(*(_parse_id_range(p) for p in parts))


def _parse_id_range(text: str) -> IdRange | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is neither a number nor a range lo-hi")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise ValueError(f"range {text!r} ends before it starts")
    return IdRange(lo, hi)


_MEMSIZE_UNITS = {
    "": 1,
    "m": 1,
    "mi": 1,
    "mb": 1,
    "mib": 1,
    "g": 1024,
    "gi": 1024,
    "gb": 1024,
    "gib": 1024,
}


def parse_mebibytes(text: str) -> int:
    """A size in MiB: a plain number means MiB; ``m``/``Mi``/``g``/``Gi`` suffixes allowed."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _MEMSIZE_UNITS:
        raise ValueError(f"{text!r} is not a size in MiB (e.g. 512, 512Mi, 2Gi)")
    return int(m.group(1)) * _MEMSIZE_UNITS[m.group(2).lower()]


def parse_labels(text: str) -> dict[str, str]:
    """JOB_LABELS: a comma-separated list of ``key=value`` pairs."""
    labels: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not of the form key=value")
        labels[key.strip()] = value.strip()
    return labels


def parse_tokens(text: str) -> tuple[str, ...]:
    """PMAN_AUTH_TOKENS: comma-separated bearer tokens."""
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    for t in tokens:
        if any(c.isspace() or not c.isprintable() for c in t):
            raise ValueError("a token must not contain spaces or control characters")
    return tokens


def read_tokens_file(path: str) -> tuple[str, ...]:
    """PMAN_AUTH_TOKENS_FILE: one token per line; blank lines and ``#`` comments skipped."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from e
    lines = [line.strip() for line in text.splitlines()]
    return parse_tokens(",".join(line for line in lines if line and not line.startswith("#")))


_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def parse_tolerations(text: str) -> tuple[dict[str, Any], ...]:
    """TOLERATIONS: a JSON list of Kubernetes Toleration objects, e.g.
    ``[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]``."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg}): give a JSON list of tolerations") from e
    if not isinstance(items, list):
        raise ValueError("give a JSON list of tolerations")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} is not an object")
        unknown = set(item) - _TOLERATION_KEYS
        if unknown:
            raise ValueError(f"item {i}: unknown field(s) {', '.join(sorted(unknown))}")
        if item.get("operator", "Equal") not in _TOLERATION_OPERATORS:
            choices = ", ".join(_TOLERATION_OPERATORS)
            raise ValueError(f"item {i}: operator must be one of {choices}")
        if "effect" in item and item["effect"] not in _TOLERATION_EFFECTS:
            raise ValueError(f"item {i}: effect must be one of {', '.join(_TOLERATION_EFFECTS)}")
        if item.get("operator") == "Exists" and item.get("value"):
            raise ValueError(f"item {i}: operator Exists takes no value")
        if not item.get("key") and item.get("operator") != "Exists":
            raise ValueError(f"item {i}: a toleration without a key needs operator Exists")
        seconds = item.get("tolerationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or isinstance(seconds, bool)):
            raise ValueError(f"item {i}: tolerationSeconds must be an integer")
        for field_name in ("key", "value"):
            if field_name in item and not isinstance(item[field_name], str):
                raise ValueError(f"item {i}: {field_name} must be a string")
    return tuple(items)


@dataclass(frozen=True)
class Settings:
    """Everything pman is configured with. Build it with :func:`load_settings`."""

    container_env: str = "local"
    storage_type: str = "host"
    #: where job data lives (host path); required for host and nfs storage
    storebase: Path | None = None
    nfs_server: str | None = None
    volume_name: str | None = None
    pfcon_selector: str = "org.chrisproject.role=pfcon"
    #: number of log lines returned with a job's status
    job_logs_tail: int = 1000
    job_labels: dict[str, str] = field(default_factory=dict)
    ignore_limits: bool = False
    container_user: ContainerUser = field(default_factory=ContainerUser)
    securitycontext_run_as_user: int | None = None
    securitycontext_run_as_group: int | None = None
    enable_home_workaround: bool = False
    #: size of /dev/shm in MiB, None for the engine's default
    shm_size: int | None = None
    remove_jobs: bool = True
    docker_host: str | None = None
    docker_tls_verify: bool = False
    docker_cert_path: str | None = None
    #: Docker Engine API version pman speaks; fixed so that start-up needs no round-trip
    docker_api_version: str = "1.41"
    job_namespace: str = "default"
    node_selector: dict[str, str] = field(default_factory=dict)
    image_pull_secrets: tuple[str, ...] = ()
    cromwell_url: str | None = None
    #: wall-clock limit of a job in minutes (SLURM, Cromwell)
    timelimit_minutes: int = 30
    secret_key: str | None = field(default=None, repr=False)
    application_mode: str = "production"
    #: where pman keeps its own state (local backend's job folders, ...)
    data_dir: Path = Path("pman-data")
    #: seconds pman waits for one engine call before calling the engine unavailable
    engine_timeout: float = 30.0
    server_version: str = ""
    #: SQLAlchemy URL of the job registry; default a SQLite file in data_dir
    database_url: str = ""
    #: names this pman's jobs on an engine other pmans may share: its tracker
    #: adopts only jobs of its own instance (or of none); default from database_url
    instance: str = ""
    #: run the tracker that follows the engine (off only for tests that drive it)
    tracker_enabled: bool = True
    #: seconds between tracker cycles while jobs are unfinished
    tracker_interval: float = 0.5
    #: how often (seconds) the tracker refreshes the stored logs of each running job
    logs_refresh_seconds: float = 2.0
    #: seconds a swarm task may wait for a node (e.g. "insufficient resources")
    #: before its job is reported as an error
    swarm_pending_timeout: float = 60.0
    # -- logs (pman.telemetry)
    #: "json": one JSON object per log line; "text": plain lines. Default json in
    #: production, text in development
    log_format: str = "json"
    #: one log line per HTTP request (logger pman.access, on stdout)
    access_log: bool = True
    # -- authentication (pman.api.auth)
    #: "token": every endpoint but /health needs a bearer token; "none": no authentication
    auth_mode: str = "token"
    #: static bearer tokens (PMAN_AUTH_TOKENS and the lines of PMAN_AUTH_TOKENS_FILE)
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    #: the user POST /api/v1/auth-token/ issues JWTs for
    auth_user: str | None = None
    auth_password: str | None = field(default=None, repr=False)
    #: seconds a JWT from /api/v1/auth-token/ stays valid
    auth_token_lifetime: int = 3600
    # -- webhooks (pman.webhooks)
    #: the global hook every state transition is POSTed to (kept out of repr:
    #: a Slack URL is itself a credential)
    webhook_url: str | None = field(default=None, repr=False)
    #: "json" (pman's payload) or "slack" ({"text": ...}) for the global hook
    webhook_format: str = "json"
    #: HMAC-SHA256 key signing every delivery, the global hook's and jobs' callbacks
    webhook_secret: str | None = field(default=None, repr=False)
    #: hosts a job's callback_url may name: "*" any, "name", "*.domain"
    webhook_allowed_hosts: tuple[str, ...] = ("*",)
    #: attempts per delivery before it is marked failed
    webhook_max_attempts: int = 10
    #: seconds before the first retry; doubled each attempt, up to the cap
    webhook_backoff_base: float = 1.0
    webhook_backoff_cap: float = 300.0
    #: seconds one delivery attempt may take (connect + answer)
    webhook_timeout: float = 10.0
    # -- Kubernetes (CONTAINER_ENV=kubernetes)
    #: kubeconfig file; None: in-cluster config inside a pod, else ~/.kube/config
    kubeconfig: str | None = None
    #: whether pman runs inside a Kubernetes pod (KUBERNETES_SERVICE_HOST is set)
    kubernetes_in_cluster: bool = False
    #: the extended resource a job's GPUs are asked as
    kubernetes_gpu_resource: str = "nvidia.com/gpu"
    #: tolerations of every job's pod, as Kubernetes Toleration objects
    tolerations: tuple[dict[str, Any], ...] = ()
    #: seconds a finished Job stays in the cluster (ttlSecondsAfterFinished);
    #: pman's registry keeps its state and logs after that
    job_ttl_seconds: int = 86400
    #: seconds a pod may stay unable to start (image pull failing, unschedulable,
    #: config error) before its job is reported as an error
    kubernetes_pending_timeout: float = 120.0

    # ---- confinement and limits (issue 7) ------------------------------------
    #: the largest request body accepted, in bytes (a bigger one is 413)
    max_request_bytes: int = 1024 * 1024
    #: the bounds every request is checked against: counts and lengths of args
    #: and env, per-job caps (0 = no cap; CPU in millicores, memory in MiB) and
    #: the image allowlist (pman.limits)
    limits: Limits = field(default_factory=Limits)
    #: capabilities given back to jobs on docker, podman and swarm (all others dropped)
    cap_add: tuple[str, ...] = ()
    #: docker, podman, swarm: the job's root filesystem is read-only (a tmpfs at /tmp)
    read_only_rootfs: bool = False
    #: the most jobs on the engine at once; more wait in pman's queue. 0 = no limit
    max_running: int = 0

    # ---- availability: kinds of work kept apart (issue 13, pman.api.lanes) ----
    #: threads per process for quick requests (polls, listing, health, login)
    quick_threads: int = 4
    #: requests per process that may be in an engine call at once (POST, DELETE,
    #: cancel); more wait for a turn until PMAN_ENGINE_TIMEOUT, then 503
    max_engine_calls: int = 8
    #: log streams (GET .../logs/) open at once per process, and per client
    #: (bearer token, or address without one) per process; beyond: 429 at once
    max_log_streams: int = 100
    max_log_streams_per_client: int = 20
    #: seconds a log stream may pass no data before pman ends it
    log_stream_idle_timeout: float = 300.0
    #: seconds a request's body may take to arrive in full (408 after it)
    body_timeout: float = 30.0

    # ---- SLURM backend (CONTAINER_ENV=slurm) ---------------------------------
    #: folder of each job's batch script, log and status files; pman and every
    #: compute node must see it at this path (a shared filesystem on a real
    #: cluster). Default PMAN_DATA_DIR/slurm/jobs
    slurm_job_dir: Path | None = None
    #: what runs the job's image on the node: apptainer, singularity, docker,
    #: podman, or none (the command runs directly on the node)
    slurm_container_runtime: str = "apptainer"
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    #: more sbatch options for every job, e.g. ("--constraint=intel",)
    slurm_extra_options: tuple[str, ...] = ()
    #: folder of SLURM's commands (sbatch, squeue...), None for PATH
    slurm_bin_dir: Path | None = None
    #: SLURM_CONF passed to SLURM's commands, None for SLURM's own default
    slurm_conf: str | None = None
    # ---- end of SLURM backend -------------------------------------------------
    # ---- local backend (pman.backends.local) ------------------------------------
    #: PMAN_LOCAL_USER as given, ``USER[:GROUP]`` (numbers or names, looked up when
    #: the backend starts); None: nobody (65534:65534) under a root pman, else
    #: pman's own user
    local_user: str | None = None
    #: more host folders every local job sees read-only at the same path
    local_read_only_paths: tuple[Path, ...] = ()
    # ---- end of local backend ---------------------------------------------------

    def docker_environment(self) -> dict[str, str]:
        """The DOCKER_* variables the docker SDK's ``from_env`` understands."""
        env = {"DOCKER_HOST": self.docker_host or DEFAULT_DOCKER_HOSTS.get(self.container_env, "")}
        if self.docker_tls_verify:
            env["DOCKER_TLS_VERIFY"] = "1"
        if self.docker_cert_path:
            env["DOCKER_CERT_PATH"] = self.docker_cert_path
        return env


def _check_database_url(text: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except ArgumentError as e:
        raise ValueError(f"{text!r} is not a database URL: {e}") from e
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"{url.get_backend_name()!r}: only sqlite and postgresql are supported")
    return text


# ---- SLURM backend settings --------------------------------------------------
SLURM_RUNTIMES = ("apptainer", "singularity", "docker", "podman", "none")
#: sbatch options pman sets itself for every job: SLURM_EXTRA_OPTIONS must not change them
SLURM_RESERVED_OPTIONS = frozenset(
    {
        "-J", "--job-name", "-o", "--output", "-e", "--error", "-a", "--array",
        "-D", "--chdir", "-i", "--input", "-W", "--wait", "--comment", "--export",
        "--open-mode", "--parsable", "--wrap", "--requeue", "--no-requeue",
        # per-job resources come from the request and TIMELIMIT_MINUTES
        "-t", "--time", "-c", "--cpus-per-task", "--mem", "--mem-per-cpu", "--gres",
        "--gpus", "-G",
    }
)  # fmt: skip
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,@+-]+")


def parse_slurm_extra_options(text: str) -> tuple[str, ...]:
    """SLURM_EXTRA_OPTIONS: sbatch options split as a shell would (``--constraint=a
    --reservation=r``); options pman sets itself for every job are refused."""
    import shlex

    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"cannot split {text!r} like a shell: {e}") from e
    if words and not words[0].startswith("-"):
        raise ValueError(f"{words[0]!r} is not an sbatch option (options start with '-')")
    for word in words:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
        elif word.startswith("-"):
            option = word[:2]  # a short option, perhaps glued to its value: -Jname
        else:
            continue  # the value of the option before
        if option in SLURM_RESERVED_OPTIONS:
            raise ValueError(f"{option} is set by pman for every job and cannot be given here")
    return tuple(words)


def _slurm_name(text: str) -> str:
    if not _SLURM_NAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a SLURM name (letters, digits and _ . , @ + - only)")
    return text


# ---- end of SLURM backend settings ------------------------------------------


# ---- local backend settings --------------------------------------------------
_LOCAL_ID = re.compile(r"\d+|[A-Za-z_][A-Za-z0-9_.-]*")


def parse_local_user(text: str) -> str:
    """PMAN_LOCAL_USER: ``USER[:GROUP]``, each a number or a name."""
    user, sep, group = text.strip().partition(":")
    if not _LOCAL_ID.fullmatch(user) or (sep and not _LOCAL_ID.fullmatch(group)):
        raise ValueError(f"{text!r} is not USER or USER:GROUP (numbers or names, e.g. 65534:65534)")
    return f"{user}:{group}" if sep else user


def parse_local_read_only_paths(text: str) -> tuple[Path, ...]:
    """PMAN_LOCAL_READ_ONLY_PATHS: comma-separated absolute host paths."""
    paths = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if not item.startswith("/"):
            raise ValueError(f"{item!r} is not an absolute path")
        path = Path(os.path.normpath(item))
        if path == Path("/"):
            raise ValueError("'/' would show jobs the whole host")
        paths.append(path)
    return tuple(paths)


# ---- end of local backend settings -------------------------------------------


class _MappingEnv(Env):
    """environs' Env reading from a given mapping instead of os.environ."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(eager=False)
        self._source = environ

    def _get_value(self, env_key: str, default: Any) -> Any:
        return self._source.get(env_key, default)


def _default_data_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_DATA_HOME") or os.path.join(
        environ.get("HOME", os.path.expanduser("~")), ".local", "share"
    )
    return os.path.join(base, "pman")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every variable; raise ConfigError naming all bad ones at once."""
    from pman import __version__

    environ = os.environ if environ is None else environ
    env = _MappingEnv(environ)
    errors: dict[str, str] = {}

    def custom(name: str, parse: Any, default: Any) -> Any:
        raw = environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except ValueError as e:
            errors[name] = str(e)
            return default

    values: dict[str, Any] = dict(
        container_env=env.str("CONTAINER_ENV", "local", validate=OneOf(CONTAINER_ENVS)),
        storage_type=env.str("STORAGE_TYPE", "host", validate=OneOf(STORAGE_TYPES)),
        storebase=env.path("STOREBASE", None),
        nfs_server=env.str("NFS_SERVER", None),
        volume_name=env.str("VOLUME_NAME", None),
        pfcon_selector=env.str("PFCON_SELECTOR", "org.chrisproject.role=pfcon"),
        job_logs_tail=env.int("JOB_LOGS_TAIL", 1000, validate=Range(min=0)),
        ignore_limits=env.bool("IGNORE_LIMITS", False),
        securitycontext_run_as_user=env.int(
            "SECURITYCONTEXT_RUN_AS_USER", None, validate=Range(min=0)
        ),
        securitycontext_run_as_group=env.int(
            "SECURITYCONTEXT_RUN_AS_GROUP", None, validate=Range(min=0)
        ),
        enable_home_workaround=env.bool("ENABLE_HOME_WORKAROUND", False),
        remove_jobs=env.bool("REMOVE_JOBS", True),
        docker_host=env.str("DOCKER_HOST", None),
        docker_tls_verify=env.bool("DOCKER_TLS_VERIFY", False),
        docker_cert_path=env.str("DOCKER_CERT_PATH", None),
        docker_api_version=env.str("DOCKER_API_VERSION", "1.41"),
        job_namespace=env.str("JOB_NAMESPACE", "default"),
        image_pull_secrets=tuple(env.list("IMAGE_PULL_SECRETS", [])),
        cromwell_url=env.str("CROMWELL_URL", None),
        timelimit_minutes=env.int("TIMELIMIT_MINUTES", 30, validate=Range(min=1)),
        secret_key=env.str("SECRET_KEY", None),
        application_mode=env.str(
            "APPLICATION_MODE", "production", validate=OneOf(("production", "development"))
        ),
        data_dir=env.path("PMAN_DATA_DIR", _default_data_dir(environ)),
        engine_timeout=env.float("PMAN_ENGINE_TIMEOUT", 30.0, validate=Range(min=0.1)),
        database_url=env.str("PMAN_DATABASE_URL", ""),
        instance=env.str("PMAN_INSTANCE", ""),
        tracker_enabled=env.bool("PMAN_TRACKER", True),
        tracker_interval=env.float("PMAN_TRACKER_INTERVAL", 0.5, validate=Range(min=0.01)),
        logs_refresh_seconds=env.float("PMAN_LOGS_REFRESH_SECONDS", 2.0, validate=Range(min=0.1)),
        swarm_pending_timeout=env.float(
            "PMAN_SWARM_PENDING_TIMEOUT", 60.0, validate=Range(min=1.0)
        ),
        auth_mode=env.str("PMAN_AUTH", "token", validate=OneOf(("token", "none"))),
        log_format=env.str(
            "PMAN_LOG_FORMAT",
            "text" if environ.get("APPLICATION_MODE") == "development" else "json",
            validate=OneOf(("json", "text")),
        ),
        access_log=env.bool("PMAN_ACCESS_LOG", True),
        auth_user=env.str("PMAN_AUTH_USER", None),
        auth_password=env.str("PMAN_AUTH_PASSWORD", None),
        auth_token_lifetime=env.int(
            "PMAN_AUTH_TOKEN_LIFETIME", 3600, validate=Range(min=60, max=30 * 86400)
        ),
        kubeconfig=env.str("KUBECONFIG", None),
        kubernetes_in_cluster=bool(environ.get("KUBERNETES_SERVICE_HOST")),
        kubernetes_gpu_resource=env.str("KUBERNETES_GPU_RESOURCE", "nvidia.com/gpu"),
        job_ttl_seconds=env.int("JOB_TTL_SECONDS", 86400, validate=Range(min=60)),
        kubernetes_pending_timeout=env.float(
            "PMAN_KUBERNETES_PENDING_TIMEOUT", 120.0, validate=Range(min=1.0)
        ),
        max_request_bytes=env.int("PMAN_MAX_REQUEST_BYTES", 1024 * 1024, validate=Range(min=1024)),
        max_args=env.int("PMAN_MAX_ARGS", 1000, validate=Range(min=1)),
        max_arg_length=env.int("PMAN_MAX_ARG_LENGTH", 4096, validate=Range(min=1)),
        max_env=env.int("PMAN_MAX_ENV", 500, validate=Range(min=0)),
        max_env_length=env.int("PMAN_MAX_ENV_LENGTH", 32768, validate=Range(min=1)),
        max_cpu_limit=env.int("PMAN_MAX_CPU_LIMIT", 0, validate=Range(min=0)),
        max_gpu_limit=env.int("PMAN_MAX_GPU_LIMIT", 0, validate=Range(min=0)),
        max_workers=env.int("PMAN_MAX_WORKERS", 100, validate=Range(min=0)),
        read_only_rootfs=env.bool("PMAN_READ_ONLY_ROOTFS", False),
        max_running=env.int("PMAN_MAX_RUNNING", 0, validate=Range(min=0)),
        quick_threads=env.int("PMAN_THREADS", 4, validate=Range(min=1, max=256)),
        max_engine_calls=env.int("PMAN_MAX_ENGINE_CALLS", 8, validate=Range(min=1, max=1024)),
        max_log_streams=env.int("PMAN_MAX_LOG_STREAMS", 100, validate=Range(min=0, max=10000)),
        max_log_streams_per_client=env.int(
            "PMAN_MAX_LOG_STREAMS_PER_CLIENT", 20, validate=Range(min=0, max=10000)
        ),
        log_stream_idle_timeout=env.float(
            "PMAN_LOG_STREAM_IDLE_TIMEOUT", 300.0, validate=Range(min=1.0)
        ),
        body_timeout=env.float("PMAN_BODY_TIMEOUT", 30.0, validate=Range(min=0.1, max=3600)),
    )
    values["max_memory_limit"] = custom("PMAN_MAX_MEMORY_LIMIT", parse_mebibytes, 0)
    values["image_allowlist"] = custom("PMAN_IMAGE_ALLOWLIST", parse_image_allowlist, ())
    limit_names = [f.name for f in fields(Limits)]
    values["limits"] = Limits(**{name: values.pop(name) for name in limit_names})
    values["cap_add"] = custom("PMAN_CAP_ADD", parse_capabilities, ())
    values["job_labels"] = custom("JOB_LABELS", parse_labels, {})
    values["node_selector"] = custom("NODE_SELECTOR", parse_labels, {})
    values["container_user"] = custom("CONTAINER_USER", ContainerUser.parse, ContainerUser())
    values["shm_size"] = custom("SHM_SIZE", parse_mebibytes, None)
    values["tolerations"] = custom("TOLERATIONS", parse_tolerations, ())
    values["auth_tokens"] = custom("PMAN_AUTH_TOKENS", parse_tokens, ()) + custom(
        "PMAN_AUTH_TOKENS_FILE", read_tokens_file, ()
    )
    custom("PMAN_DATABASE_URL", _check_database_url, None)
    # ---- webhooks ---------------------------------------------------------
    from pman.webhooks import check_webhook_url, parse_allowed_hosts

    values["webhook_url"] = custom("PMAN_WEBHOOK_URL", check_webhook_url, None)
    values["webhook_format"] = env.str(
        "PMAN_WEBHOOK_FORMAT", "json", validate=OneOf(("json", "slack"))
    )
    values["webhook_secret"] = env.str("PMAN_WEBHOOK_SECRET", None) or None
    values["webhook_allowed_hosts"] = custom(
        "PMAN_WEBHOOK_ALLOWED_HOSTS", parse_allowed_hosts, ("*",)
    )
    values["webhook_max_attempts"] = env.int(
        "PMAN_WEBHOOK_MAX_ATTEMPTS", 10, validate=Range(min=1, max=100)
    )
    values["webhook_backoff_base"] = env.float(
        "PMAN_WEBHOOK_BACKOFF_BASE", 1.0, validate=Range(min=0.01, max=3600)
    )
    values["webhook_backoff_cap"] = env.float(
        "PMAN_WEBHOOK_BACKOFF_CAP", 300.0, validate=Range(min=0.01, max=86400)
    )
    values["webhook_timeout"] = env.float(
        "PMAN_WEBHOOK_TIMEOUT", 10.0, validate=Range(min=0.1, max=300)
    )
    # ---- end of webhooks --------------------------------------------------
    # ---- SLURM backend ----------------------------------------------------
    values["slurm_job_dir"] = env.path("SLURM_JOB_DIR", None)
    values["slurm_container_runtime"] = env.str(
        "SLURM_CONTAINER_RUNTIME", "apptainer", validate=OneOf(SLURM_RUNTIMES)
    )
    values["slurm_partition"] = custom("SLURM_PARTITION", _slurm_name, None)
    values["slurm_account"] = custom("SLURM_ACCOUNT", _slurm_name, None)
    values["slurm_qos"] = custom("SLURM_QOS", _slurm_name, None)
    values["slurm_extra_options"] = custom("SLURM_EXTRA_OPTIONS", parse_slurm_extra_options, ())
    values["slurm_bin_dir"] = env.path("SLURM_BIN_DIR", None)
    values["slurm_conf"] = env.str("SLURM_CONF", None)
    # ---- end of SLURM backend ---------------------------------------------
    # ---- local backend ----------------------------------------------------
    values["local_user"] = custom("PMAN_LOCAL_USER", parse_local_user, None)
    values["local_read_only_paths"] = custom(
        "PMAN_LOCAL_READ_ONLY_PATHS", parse_local_read_only_paths, ()
    )
    # ---- end of local backend ---------------------------------------------
    try:
        env.seal()
    except EnvValidationError as e:
        for name, messages in e.error_messages.items():
            errors[str(name)] = "; ".join(str(m) for m in messages)

    storage = values["storage_type"]
    if storage in ("host", "nfs") and values["storebase"] is None:
        errors["STOREBASE"] = f"required when STORAGE_TYPE={storage}"
    if storage == "nfs" and not values["nfs_server"]:
        errors["NFS_SERVER"] = "required when STORAGE_TYPE=nfs"
    if storage == "kubernetes_pvc" and not values["volume_name"]:
        errors["VOLUME_NAME"] = "required when STORAGE_TYPE=kubernetes_pvc"
    if storage == "docker_local_volume" and values["container_env"] not in (
        "docker",
        "podman",
        "swarm",
    ):
        errors["STORAGE_TYPE"] = "docker_local_volume needs CONTAINER_ENV docker, podman or swarm"
    if storage == "kubernetes_pvc" and values["container_env"] != "kubernetes":
        errors["STORAGE_TYPE"] = "kubernetes_pvc needs CONTAINER_ENV=kubernetes"
    if values["container_env"] == "cromwell" and not values["cromwell_url"]:
        errors["CROMWELL_URL"] = "required when CONTAINER_ENV=cromwell"
    elif values["cromwell_url"] and not re.match(r"https?://[^/\s]", values["cromwell_url"]):
        errors["CROMWELL_URL"] = f"{values['cromwell_url']!r} is not an http:// or https:// URL"
    if values["container_env"] == "local" and storage != "host":
        errors["STORAGE_TYPE"] = "the local backend only supports STORAGE_TYPE=host"
    # ---- webhooks ---------------------------------------------------------
    secret = values["webhook_secret"]
    if values["webhook_url"] and not secret:
        errors["PMAN_WEBHOOK_SECRET"] = "required with PMAN_WEBHOOK_URL (it signs every delivery)"
    elif (
        secret
        and values["application_mode"] == "production"
        and len(secret) < MIN_WEBHOOK_SECRET_LENGTH
    ):
        errors["PMAN_WEBHOOK_SECRET"] = (
            f"must have at least {MIN_WEBHOOK_SECRET_LENGTH} characters in production "
            "(e.g. `openssl rand -hex 32`)"
        )
    # ---- SLURM backend ----------------------------------------------------
    if values["container_env"] == "slurm":
        if storage not in ("host", "nfs"):
            errors["STORAGE_TYPE"] = (
                "the slurm backend needs STOREBASE as a folder the compute nodes see at the "
                "same path: STORAGE_TYPE host or nfs"
            )
        runtime = values["slurm_container_runtime"]
        user = values["container_user"]
        if runtime in ("apptainer", "singularity", "none") and (user.uid or user.gid):
            errors["CONTAINER_USER"] = (
                f"SLURM_CONTAINER_RUNTIME={runtime} runs jobs as the user that submits them "
                "(pman's): CONTAINER_USER needs docker or podman"
            )
        if values["shm_size"] is not None and runtime not in ("docker", "podman"):
            errors["SHM_SIZE"] = f"not supported with SLURM_CONTAINER_RUNTIME={runtime}"
        bin_dir = values["slurm_bin_dir"]
        if bin_dir is not None and not Path(bin_dir).is_absolute():
            errors["SLURM_BIN_DIR"] = "must be an absolute path"
    # ---- end of SLURM backend ---------------------------------------------

    if errors:
        lines = "\n".join(f"  {k}: {v}" for k, v in sorted(errors.items()))
        raise ConfigError(f"invalid configuration:\n{lines}", fields=errors)
    if values["storebase"] is not None:
        values["storebase"] = Path(os.path.abspath(values["storebase"]))
    values["data_dir"] = Path(os.path.abspath(values["data_dir"]))
    values["slurm_job_dir"] = Path(
        os.path.abspath(values["slurm_job_dir"] or values["data_dir"] / "slurm" / "jobs")
    )
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{values['data_dir'] / 'pman.db'}"
    if not values["instance"]:
        # one registry, one instance: stable across restarts, apart across pmans
        values["instance"] = hashlib.sha256(values["database_url"].encode()).hexdigest()[:12]
    return Settings(server_version=__version__, **values)
