"""Jobs as containers on a Docker Engine, or on Podman's Docker-compatible API.

Uses the docker SDK's low-level APIClient: a submit is exactly one create and
one start (plus a pull only when the image is missing), a status is one
inspect.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest
from docker.utils import kwargs_from_env, parse_repository_tag

from pman.backends.base import Backend, ChangeStream
from pman.backends.kit.files import LOG_CHUNK
from pman.backends.kit.streams import LogStream, shutdown_response
from pman.errors import (
    BackendError,
    BackendUnavailable,
    InvalidJobSpec,
    JobExists,
    JobNotFound,
    PmanError,
    UnsupportedOption,
)
from pman.labels import LABEL_FINGERPRINT, LABEL_IMAGE, LABEL_MANAGED
from pman.models import INCOMING, OUTGOING, JobInfo, JobSpec, JobState
from pman.settings import Settings

log = logging.getLogger(__name__)

#: Container ``State.Status`` -> JobState. "exited" (and Podman's "stopped") is
#: decided by the exit code and the OOM flag, see ``_state_of``.
#: https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Container/operation/ContainerInspect
#: https://docs.podman.io/en/latest/_static/api.html#tag/containers-(compat)
DOCKER_STATES: dict[str, JobState | None] = {
    "created": JobState.QUEUED,
    "configured": JobState.QUEUED,  # Podman
    "initialized": JobState.QUEUED,  # Podman
    "running": JobState.RUNNING,
    "paused": JobState.RUNNING,
    "restarting": JobState.RUNNING,
    "stopping": JobState.RUNNING,  # Podman
    "removing": JobState.UNKNOWN,  # on its way out: the tracker sees how it ends
    "exited": None,
    "stopped": None,  # Podman
    "dead": JobState.SYSTEM_ERROR,
}

#: request fields named by words in an engine's 4xx message
_ENGINE_WORDS = {"memory_limit": "memory", "cpu_limit": "cpu", "image": "image"}
_MIB = 1024 * 1024
#: Where pfcon mounts the storebase volume (upstream's convention), used to
#: find the volume from pfcon's container when VOLUME_NAME is not given.
PFCON_STOREBASE_DESTINATION = "/var/local/storeBase"


def parse_engine_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 times carry nanoseconds; Python keeps microseconds."""
    if not text or text.startswith("0001-01-01"):
        return None
    text = text.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text)


#: statuses of a container that was created and not started yet
_NOT_STARTED = frozenset({"created", "configured", "initialized"})
#: pman starts a container as soon as it has created it, and a start slower
#: than PMAN_ENGINE_TIMEOUT fails the submission (which removes the container).
#: One still not started after this long (or twice the engine timeout) was
#: left by a pman that stopped between the two calls: it will never run.
NEVER_STARTED_AFTER_S = 60.0
NEVER_STARTED_MESSAGE = "never started: pman stopped between creating the container and starting it"


def _abandoned(status: str, created: datetime | None, never_started_after: float) -> bool:
    if status not in _NOT_STARTED or created is None:
        return False
    return (datetime.now(UTC) - created).total_seconds() > never_started_after


def _state_of(
    attrs: dict[str, Any],
    memory_limit: int,
    oom_reported: bool,
    never_started_after: float = NEVER_STARTED_AFTER_S,
) -> tuple[JobState, str, str]:
    """(state, reason, message) of an inspected container.

    ``oom_reported`` is False for engines whose OOM flag cannot be trusted to
    be set (Podman with cgroup v1): there a SIGKILL under a memory limit is
    reported as a probable OOM kill.
    """
    st = attrs.get("State") or {}
    status = str(st.get("Status", "")).lower()
    if status not in DOCKER_STATES:
        log.warning("unknown container status %r of %s", status, attrs.get("Name"))
        return JobState.UNKNOWN, "unknown_status", f"engine reports status {status!r}"
    if _abandoned(status, parse_engine_time(attrs.get("Created")), never_started_after):
        return JobState.SYSTEM_ERROR, "never_started", NEVER_STARTED_MESSAGE
    state = DOCKER_STATES[status]
    if state is not None:
        error = st.get("Error") or ""
        message = error if state is JobState.SYSTEM_ERROR and error else status
        return state, "", message
    code = st.get("ExitCode")
    # The OOM flag means some process of the container was killed for memory;
    # if the job still exited 0 it handled that itself and succeeded.
    limit = f"memory_limit {memory_limit // _MIB} MiB"
    oom = f"out of memory ({limit})" if st.get("OOMKilled") else ""
    if code == 0:
        return (
            JobState.SUCCEEDED,
            "",
            "exited with code 0" + (f"; a process hit {oom}" if oom else ""),
        )
    if oom:
        return JobState.FAILED, "oom_killed", f"killed: {oom}, exit code {code}"
    if st.get("Error") and parse_engine_time(st.get("StartedAt")) is None:
        return JobState.SYSTEM_ERROR, "start_failed", f"could not start: {st['Error']}"
    if code == 137 and memory_limit and not oom_reported:
        return (
            JobState.FAILED,
            "killed",
            f"killed by SIGKILL (exit code 137); this engine does not report OOM kills, "
            f"so it was most likely out of memory ({limit})",
        )
    return JobState.FAILED, "exit_code", f"exited with code {code}"


#: how often a followed service's state is checked, and how long its last
#: lines get to arrive once it has ended
FOLLOW_POLL_S = 1.0
FOLLOW_DRAIN_S = 1.0
#: seconds a cancelled container gets between SIGTERM and SIGKILL
CANCEL_GRACE_S = 5

_EXITED = re.compile(r"Exited \((-?\d+)\)")


#: the longest unfinished line of one stream that demultiplexing holds back
#: while it waits for the stream to end it (then it goes out as it is)
MAX_HELD_LINE = 1024 * 1024


class LineMerger:
    """Merges the stdout and stderr frames of a container's log into one text
    a whole line at a time.

    An engine's frames need not end at a line's end: Podman's log (conmon)
    records what one read of the job's pipe gave, so a burst of output leaves
    a line in two frames, and a frame of the other stream can come between
    them. Concatenating frames then cuts that line and glues the other
    stream's line to its first half. Here a stream's unfinished line is held
    until the stream ends it, so each line of the result is a whole line of
    ONE stream: each stream's lines in their order, the two streams' lines
    in the order the engine completed them. Two exceptions, both rare: a line
    held past ``max_held`` bytes goes out unfinished, and the streams' last
    lines if unfinished go out at the end; where a stream's output does not
    end with a newline and the other stream's follows, a newline is put
    between them rather than make one line of the two.
    """

    def __init__(self, max_held: int = MAX_HELD_LINE) -> None:
        self.max_held = max_held
        #: each stream's unfinished line, in the order they began
        self._held: dict[int, bytearray] = {}
        #: the stream whose output went out without a final newline
        self._open: int | None = None

    def _out(self, stream: int, data: bytes) -> bytes:
        joint = b"\n" if self._open is not None and self._open != stream else b""
        self._open = None if data.endswith(b"\n") else stream
        return joint + data

    def feed(self, stream: int, data: bytes) -> bytes:
        """What can go out after ``data`` of ``stream`` (b"" while a line is unfinished)."""
        held = self._held.get(stream)
        if held is None:
            if data.endswith(b"\n"):
                return self._out(stream, data)  # whole lines, as most frames are
            if not data:
                return b""
            held = self._held[stream] = bytearray()
        # the end of the stream's last whole line (what is held has no newline)
        end = data.rfind(b"\n") + 1
        cut = len(held) + end if end else 0
        held += data
        if len(held) - cut > self.max_held:
            cut = len(held)
        if not cut:
            return b""
        out = bytes(held[:cut])
        del self._held[stream]
        if cut < len(held):  # a new unfinished line, begun now
            del held[:cut]
            self._held[stream] = held
        return self._out(stream, out)

    def end(self) -> bytes:
        """The unfinished last lines, once the streams have ended."""
        out = b"".join(self._out(stream, bytes(held)) for stream, held in self._held.items())
        self._held.clear()
        return out


def _header(header: bytes) -> bool:
    """Whether 8 bytes are a frame header: stream type (0-2), 3 zero bytes, length."""
    return len(header) == 8 and header[0] in (0, 1, 2) and header[1:4] == b"\0\0\0"


def demultiplex(data: bytes, max_held: int = MAX_HELD_LINE) -> bytes:
    """stdout and stderr of a non-TTY container's log, whole lines (see LineMerger).

    The stream is frames of an 8-byte header (stream type, 3 zero bytes, a
    big-endian payload length) and the payload:
    https://docs.docker.com/reference/api/engine/version/v1.41/#tag/Container/operation/ContainerAttach
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 8 <= len(data):
        if not _header(data[pos : pos + 8]):
            return data  # not multiplexed (a TTY): the bytes are the logs
        size = int.from_bytes(data[pos + 4 : pos + 8], "big")
        frames.append((data[pos], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    if pos != len(data):
        return data
    merger = LineMerger(max_held)
    return b"".join(merger.feed(stream, payload) for stream, payload in frames) + merger.end()


def demultiplex_stream(
    read: Callable[[int], bytes], chunk: int = LOG_CHUNK, max_held: int = MAX_HELD_LINE
) -> Iterator[bytes]:
    """``demultiplex`` for a stream: ``read(n)`` gives at most ``n`` bytes, b"" at
    the end. Reads a frame's payload in pieces of at most ``chunk`` bytes and
    yields whole lines as they complete (see LineMerger), so a long log never
    sits in memory whole and a followed stream yields each line as the engine
    sends its end."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = read(n - len(data))
            if not more:
                break
            data += more
        return data

    merger = LineMerger(max_held)
    while True:
        header = exactly(8)
        if not header:
            break
        if not _header(header):
            # not multiplexed (a TTY): the bytes are the logs
            yield header
            while data := read(chunk):
                yield data
            return
        stream, size = header[0], int.from_bytes(header[4:8], "big")
        while size > 0:
            data = exactly(min(size, chunk))
            if not data:
                break  # the engine closed the stream mid-frame
            size -= len(data)
            if out := merger.feed(stream, data):
                yield out
        if size > 0:
            break
    if out := merger.end():
        yield out


def job_info_from_summary(
    c: dict[str, Any], never_started_after: float = NEVER_STARTED_AFTER_S
) -> JobInfo:
    """A container of the list endpoint: state, and the exit code from its Status text."""
    status = str(c.get("State", "")).lower()
    labels = c.get("Labels") or {}
    state = DOCKER_STATES.get(status, JobState.UNKNOWN)
    created = c.get("Created")
    created_at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
    if _abandoned(status, created_at, never_started_after):
        state = JobState.SYSTEM_ERROR
    exit_code = None
    if state is None:
        m = _EXITED.search(c.get("Status", ""))
        exit_code = int(m.group(1)) if m else None
        state = JobState.SUCCEEDED if exit_code == 0 else JobState.FAILED
    names = c.get("Names") or [""]
    return JobInfo(
        name=names[0].lstrip("/"),
        state=state,
        image=labels.get(LABEL_IMAGE) or c.get("Image", ""),
        exit_code=exit_code,
        message=c.get("Status", ""),
        created_at=created_at,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        labels=labels,
    )


def job_info_from_inspect(
    attrs: dict[str, Any],
    oom_reported: bool = True,
    never_started_after: float = NEVER_STARTED_AFTER_S,
) -> JobInfo:
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    st = attrs.get("State") or {}
    labels = config.get("Labels") or {}
    state, reason, message = _state_of(
        attrs, host.get("Memory") or 0, oom_reported, never_started_after
    )
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    return JobInfo(
        name=attrs.get("Name", "").lstrip("/"),
        state=state,
        image=labels.get(LABEL_IMAGE) or config.get("Image", ""),
        command=command,
        exit_code=st.get("ExitCode") if state.finished else None,
        reason=reason,
        message=message,
        created_at=parse_engine_time(attrs.get("Created")),
        started_at=parse_engine_time(st.get("StartedAt")),
        finished_at=parse_engine_time(st.get("FinishedAt")) if state.finished else None,
        fingerprint=labels.get(LABEL_FINGERPRINT),
        native_id=attrs.get("Id"),
        labels=labels,
    )


def confinement(settings: Settings) -> dict[str, Any]:
    """HostConfig options that confine a job: every capability dropped but those
    PMAN_CAP_ADD gives back, no privilege gain through setuid files
    (no-new-privileges), and with PMAN_READ_ONLY_ROOTFS a read-only root
    filesystem with a writable tmpfs at /tmp (counted in the job's memory)."""
    hc: dict[str, Any] = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
    if settings.cap_add:
        hc["cap_add"] = list(settings.cap_add)
    if settings.read_only_rootfs:
        hc["read_only"] = True
        hc["tmpfs"] = {"/tmp": "rw,nosuid,nodev,mode=1777"}
    return hc


class ContainerEvents:
    """Docker's /events stream as the names of the jobs whose state may have
    changed."""

    #: events after which a container may have ended or gone (Podman says
    #: "remove" where Docker says "destroy"), and others that change its state
    ENDED: ClassVar[frozenset[str]] = frozenset({"die", "oom", "kill", "destroy", "remove"})
    CHANGED: ClassVar[frozenset[str]] = frozenset({"create", "start"})

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def job_of(self, event: dict[str, Any]) -> str | None:
        """The name of the job an event is about, None for events to ignore."""
        return str(event.get("Actor", {}).get("Attributes", {}).get("name", ""))

    def __iter__(self) -> Iterator[str]:
        try:
            for event in self._stream:
                name = self.job_of(event)
                if name is None:
                    continue
                action = event.get("Action", event.get("status"))
                if action in self.ENDED:
                    yield name
                elif action in self.CHANGED:
                    yield ""
        except (requests.exceptions.RequestException, OSError, ValueError, AttributeError):
            return  # the stream broke (or was closed): the caller reconnects

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()


class DockerBackend(Backend):
    name = "docker"
    engine: ClassVar[str] = "Docker engine"
    # Docker's container-name rule: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (two characters at least)
    name_pattern = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,127}")
    name_rule = (
        "2 to 128 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )
    #: whether the engine reliably sets State.OOMKilled
    oom_reported: ClassVar[bool] = True
    #: the unfinished states, as the engine's list ``status`` filter spells them
    active_status_filter: ClassVar[tuple[str, ...]] = ("created", "running", "paused", "restarting")

    def __init__(self, api: docker.APIClient, settings: Settings) -> None:
        self.api = api
        self.settings = settings
        self._volume_base: str | None = None
        self._volume_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerBackend:
        kwargs = kwargs_from_env(environment=settings.docker_environment())
        try:
            api = docker.APIClient(
                **kwargs,
                version=settings.docker_api_version,
                timeout=settings.engine_timeout,
            )
        except docker.errors.DockerException as e:
            raise BackendUnavailable(f"cannot set up a client for the {cls.engine}: {e}") from e
        return cls(api, settings)

    def describe(self) -> str:
        # the SDK shows a unix socket as http+docker://localhost: name the real address
        return f"{self.engine} at {self.settings.docker_environment()['DOCKER_HOST']}"

    def close(self) -> None:
        self.api.close()

    # ---------------------------------------------------------------- errors
    def _raise(self, e: Exception, doing: str) -> NoReturn:
        """The ONE place where engine library errors become pman errors."""
        if isinstance(e, PmanError):
            raise e
        where = self.describe()
        if isinstance(e, requests.exceptions.Timeout):
            raise BackendUnavailable(
                f"{where} did not answer within {self.settings.engine_timeout:g} s while {doing}"
            ) from e
        if isinstance(e, requests.exceptions.ConnectionError | FileNotFoundError):
            raise BackendUnavailable(f"{where} is unreachable while {doing}: {e}") from e
        if isinstance(e, docker.errors.APIError):
            text = str(e.explanation or e)
            if e.status_code is not None and 400 <= e.status_code < 500:
                # name the request field the engine objects to, where it says
                fields = {f: text for f, word in _ENGINE_WORDS.items() if word in text.lower()}
                raise InvalidJobSpec(f"{where} refused {doing}: {text}", fields=fields) from e
            raise BackendError(f"{where} failed {doing}: {text}", detail=text) from e
        if isinstance(e, docker.errors.DockerException):
            raise BackendUnavailable(f"{where}: {e}") from e
        raise BackendError(f"{where} failed {doing}: {e}") from e

    # ---------------------------------------------------------------- storage
    def _storebase(self) -> str:
        """STOREBASE as a path on the engine's host (found once for docker volumes)."""
        s = self.settings
        if s.storage_type == "host":
            assert s.storebase is not None
            return str(s.storebase)
        with self._volume_lock:
            if self._volume_base is None:
                self._volume_base = self._find_volume()
            return self._volume_base

    def _find_volume(self) -> str:
        s = self.settings
        try:
            if s.volume_name:
                attrs = self.api.inspect_volume(s.volume_name)
                if attrs.get("Driver") != "local":
                    raise BackendError(
                        f"volume {s.volume_name!r} uses driver {attrs.get('Driver')!r}; "
                        "STORAGE_TYPE=docker_local_volume needs the local driver"
                    )
                return attrs["Mountpoint"]
            found = self.api.containers(filters={"label": s.pfcon_selector})
            if not found:
                raise BackendError(
                    f"STORAGE_TYPE=docker_local_volume: no VOLUME_NAME and no container "
                    f"labelled {s.pfcon_selector!r} to find the volume from"
                )
            for mount in found[0].get("Mounts", []):
                if mount.get("Destination") == PFCON_STOREBASE_DESTINATION:
                    return mount["Source"]
            raise BackendError(
                f"container {found[0]['Id'][:12]} has no mount at {PFCON_STOREBASE_DESTINATION}"
            )
        except docker.errors.NotFound as e:
            raise BackendError(f"volume {s.volume_name!r} does not exist") from e
        except Exception as e:
            self._raise(e, "looking up the storage volume")

    # ---------------------------------------------------------------- submit
    def _host_config(self, spec: JobSpec) -> dict[str, Any]:
        s = self.settings
        base = self._storebase()
        m = spec.mounts
        incoming = str(m.input_host) if m.input_host else f"{base}/{m.input_dir}".rstrip("/")
        outgoing = str(m.output_host) if m.output_host else f"{base}/{m.output_dir}"
        hc: dict[str, Any] = {
            "binds": [f"{incoming}:{INCOMING}:ro", f"{outgoing}:{OUTGOING}:rw"],
            "restart_policy": {"Name": "no"},
            **confinement(s),
        }
        r = spec.resources
        if not s.ignore_limits:
            hc["mem_limit"] = r.memory_limit * _MIB
            # no swap on top: the limit is the memory the job gets
            hc["memswap_limit"] = r.memory_limit * _MIB
            hc["nano_cpus"] = r.cpu_limit * 1_000_000
        if r.gpu_limit > 0:
            hc["device_requests"] = [DeviceRequest(count=r.gpu_limit, capabilities=[["gpu"]])]
        if s.shm_size is not None:
            hc["shm_size"] = s.shm_size * _MIB
        if spec.uid is None and spec.gid is not None:
            hc["group_add"] = [str(spec.gid)]
        return self.api.create_host_config(**hc)

    def _create(self, spec: JobSpec, host_config: dict[str, Any]) -> str:
        user = None
        if spec.uid is not None:
            user = str(spec.uid) if spec.gid is None else f"{spec.uid}:{spec.gid}"
        created = self.api.create_container(
            image=spec.image,
            entrypoint=spec.command[:1],
            command=spec.command[1:],
            name=spec.name,
            environment=spec.env,
            labels=spec.labels,
            user=user,
            host_config=host_config,
            detach=True,
        )
        return created["Id"]

    def _image_missing(self, image: str, why: str) -> InvalidJobSpec:
        return InvalidJobSpec(
            f"image {image!r} is not on the {self.engine} and could not be pulled: {why}",
            fields={"image": "not present and not pullable"},
        )

    def _pull(self, image: str) -> None:
        repository, tag = parse_repository_tag(image)
        try:
            # A pull reports failure inside its progress stream (Podman always does)
            for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise self._image_missing(image, str(event["error"]))
        except docker.errors.APIError as e:
            raise self._image_missing(image, str(e.explanation or e)) from e

    def submit(self, spec: JobSpec) -> JobInfo:
        if spec.resources.number_of_workers != 1:
            raise UnsupportedOption(
                f"the {self.name} backend runs one container per job "
                f"(number_of_workers must be 1, got {spec.resources.number_of_workers})",
                fields={"number_of_workers": "must be 1"},
            )
        try:
            host_config = self._host_config(spec)
            try:
                cid = self._create(spec, host_config)
            except docker.errors.NotFound:
                # Docker says ImageNotFound; Podman's wording makes the SDK say NotFound
                self._pull(spec.image)
                try:
                    cid = self._create(spec, host_config)
                except docker.errors.NotFound as e:
                    raise self._image_missing(spec.image, str(e.explanation or e)) from e
        except docker.errors.APIError as e:
            # Docker says 409; Podman 500 with "already in use"
            if e.status_code == 409 or "already in use" in str(e.explanation):
                raise self._name_taken(spec, "container") from e
            self._raise(e, f"creating container {spec.name!r}")
        except Exception as e:
            self._raise(e, f"creating container {spec.name!r}")

        started_at = datetime.now(UTC)
        try:
            self.api.start(cid)
        except Exception as e:
            self._discard(cid)
            self._raise_start_error(e, spec)
        return JobInfo(
            name=spec.name,
            state=JobState.RUNNING,
            image=spec.image,
            command=spec.command,
            message="started",
            created_at=started_at,
            started_at=started_at,
            fingerprint=spec.fingerprint,
            native_id=cid,
        )

    def _name_taken(self, spec: JobSpec, what: str) -> JobExists:
        """The engine has a ``what`` with the job's name: JobExists, carrying the
        job pman made under that name (if it is one) for the retry check."""
        return JobExists(
            f"a {what} named {spec.name!r} exists already",
            existing=self._owned_info_or_none(spec.name),
        )

    def _raise_start_error(self, e: Exception, spec: JobSpec) -> NoReturn:
        if isinstance(e, docker.errors.APIError):
            text = str(e.explanation or e)
            low = text.lower()
            if "device driver" in low or "gpu" in low or "nvidia" in low:
                raise UnsupportedOption(
                    f"gpu_limit={spec.resources.gpu_limit} cannot be met by the "
                    f"{self.engine}: {text}",
                    fields={"gpu_limit": "no GPU available"},
                ) from e
            if "memory limit" in low:
                raise InvalidJobSpec(
                    f"memory_limit={spec.resources.memory_limit} MiB is refused by the "
                    f"{self.engine}: {text}",
                    fields={"memory_limit": "too small for the engine"},
                ) from e
            if "executable file not found" in low or (
                "exec" in low and "no such file or directory" in low
            ):
                raise InvalidJobSpec(
                    f"the {self.engine} could not start the command {spec.command[0]!r}: {text}",
                    fields={"entrypoint": "not executable in the image"},
                ) from e
        self._raise(e, f"starting container {spec.name!r}")

    def _discard(self, cid: str) -> None:
        """Remove a container that will never run, so a failed submit leaves nothing."""
        try:
            self.api.remove_container(cid, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception:
            log.exception("could not remove container %s after a failed start", cid)

    # ---------------------------------------------------------------- state
    def _inspect_owned(self, name: str) -> dict[str, Any]:
        """Inspect a container pman created; others are not jobs and stay untouched."""
        try:
            attrs = self.api.inspect_container(name)
        except docker.errors.NotFound as e:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}") from e
        except Exception as e:
            self._raise(e, f"inspecting {name!r}")
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "true" or attrs.get("Name", "").lstrip("/") != name:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}")
        return attrs

    def _owned_info_or_none(self, name: str) -> JobInfo | None:
        try:
            return self._info(self._inspect_owned(name))
        except JobNotFound:
            return None

    def get(self, name: str) -> JobInfo:
        return self._info(self._inspect_owned(name))

    @property
    def never_started_after(self) -> float:
        return max(NEVER_STARTED_AFTER_S, 2 * self.settings.engine_timeout)

    def _info(self, attrs: dict[str, Any]) -> JobInfo:
        return job_info_from_inspect(attrs, self.oom_reported, self.never_started_after)

    def logs(self, name: str, tail: int) -> str:
        return self._read_logs("containers", name, tail)

    def _read_logs(self, kind: str, name: str, tail: int) -> str:
        """The last ``tail`` lines of a container's or a service's output.

        One request: the SDK's own call inspects first, to learn whether there
        is a TTY, and pman never gives one."""
        if tail <= 0:
            return ""
        try:
            res = self.api._get(
                self.api._url(f"/{kind}/{{0}}/logs", name),
                params={"stdout": 1, "stderr": 1, "tail": tail, "timestamps": 0},
            )
            self.api._raise_for_status(res)
        except docker.errors.NotFound as e:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}") from e
        except Exception as e:
            self._raise(e, f"reading the logs of {name!r}")
        return demultiplex(res.content).decode("utf-8", errors="replace")

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        self._inspect_owned(name)
        return self._stream_logs("containers", name, tail, since, follow)

    def _stream_logs(
        self, kind: str, name: str, tail: int | None, since: datetime | None, follow: bool
    ) -> Iterator[bytes]:
        """The Engine API's logs endpoint of a container or a service, streamed:
        the request is made here (errors before the first chunk), the body is
        read frame by frame as the returned generator is iterated."""
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "timestamps": 0,
            "follow": int(follow),
            "tail": "all" if tail is None else tail,
        }
        if since is not None:
            params["since"] = f"{since.timestamp():.9f}"
        try:
            res = self.api._get(
                self.api._url(f"/{kind}/{{0}}/logs", name),
                params=params,
                stream=True,
                # a followed job may be quiet for long: the stream ends with the job
                timeout=None if follow else self.settings.engine_timeout,
            )
            self.api._raise_for_status(res)
        except docker.errors.NotFound as e:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}") from e
        except Exception as e:
            self._raise(e, f"reading the logs of {name!r}")
        return LogStream(
            self._frames(res, name, until_ended=follow and kind == "services"),
            on_abort=lambda: shutdown_response(res),
        )

    def _frames(self, res: Any, name: str, until_ended: bool = False) -> Iterator[bytes]:
        """The demultiplexed body of a logs response. ``until_ended``: the engine
        follows a service for ever (new tasks may come), so a watcher thread ends
        the stream once the job has ended, after FOLLOW_DRAIN_S for the last
        lines in flight; it stops with the generator."""
        done = threading.Event()
        if until_ended:
            threading.Thread(target=self._end_with_job, args=(res, name, done), daemon=True).start()
        try:
            yield from demultiplex_stream(res.raw.read)
        except Exception as e:
            if not done.is_set():  # not the watcher's own shutdown
                self._raise(e, f"streaming the logs of {name!r}")
        finally:
            done.set()
            res.close()  # a client that went away closes the engine's stream too

    def _end_with_job(self, res: Any, name: str, done: threading.Event) -> None:
        while not done.wait(FOLLOW_POLL_S):
            try:
                ended = self.get(name).state.finished
            except JobNotFound:
                ended = True
            except PmanError:
                continue  # the reader sees an engine outage itself
            if ended:
                if not done.wait(FOLLOW_DRAIN_S):
                    done.set()
                    with contextlib.suppress(Exception):
                        # wakes the reader blocked in recv (close() would not)
                        sock = self.api._get_raw_response_socket(res)
                        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
                return

    def cancel(self, name: str) -> None:
        """Stop the container (SIGTERM, SIGKILL after CANCEL_GRACE_S) and keep it,
        with its logs; stopping a stopped container is a no-op for the engine."""
        try:
            cid = self._inspect_owned(name)["Id"]
            self.api.stop(cid, timeout=CANCEL_GRACE_S)
        except docker.errors.NotFound as e:
            raise JobNotFound(f"no job named {name!r} on the {self.engine}") from e
        except Exception as e:
            self._raise(e, f"stopping {name!r}")

    def delete(self, name: str) -> None:
        try:
            # by id: the name could be taken by another container in between
            cid = self._inspect_owned(name)["Id"]
            self.api.remove_container(cid, force=True, v=True)
        except (JobNotFound, docker.errors.NotFound):
            return
        except Exception as e:
            self._raise(e, f"removing {name!r}")

    def _list(self, statuses: list[str] | None) -> list[JobInfo]:
        filters: dict[str, Any] = {"label": f"{LABEL_MANAGED}=true"}
        if statuses:
            filters["status"] = statuses
        try:
            found = self.api.containers(all=True, filters=filters)
        except Exception as e:
            self._raise(e, "listing pman's containers")
        return [job_info_from_summary(c, self.never_started_after) for c in found]

    def list(self) -> list[JobInfo]:
        return self._list(None)

    def list_active(self) -> list[JobInfo]:
        return self._list(list(self.active_status_filter))

    def watch(self) -> ChangeStream:
        try:
            # no "event" filter: Podman applies a list of them unlike Docker
            stream = self.api.events(
                filters={"type": "container", "label": f"{LABEL_MANAGED}=true"}, decode=True
            )
        except Exception as e:
            self._raise(e, "opening its event stream")
        return ContainerEvents(stream)

    def ping(self) -> None:
        try:
            self.api.ping()
            if self.settings.storage_type == "docker_local_volume":
                self._storebase()
        except Exception as e:
            self._raise(e, "answering a ping")


class PodmanBackend(DockerBackend):
    """The same adapter against ``podman system service`` (Docker-compatible API)."""

    name = "podman"
    engine = "Podman service"
    # Podman 4 on cgroup v1 leaves OOMKilled false after an OOM kill
    oom_reported = False
    # Podman's compatible API refuses "restarting" in the filter (pman jobs never restart)
    active_status_filter = ("created", "running", "paused")

    def submit(self, spec: JobSpec) -> JobInfo:
        if spec.resources.gpu_limit > 0:
            # Podman's Docker-compatible API accepts DeviceRequests and ignores
            # them: refuse rather than run the job without its GPUs.
            raise UnsupportedOption(
                "the Podman backend cannot give a job GPUs (gpu_limit must be 0): "
                "Podman's Docker-compatible API ignores GPU requests",
                fields={"gpu_limit": "must be 0 on Podman"},
            )
        return super().submit(spec)
