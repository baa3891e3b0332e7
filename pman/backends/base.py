"""The interface every engine adapter implements."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol

from pman.backends.kit.files import DEFAULT_FULL_LOG_LINES, read_file_chunks
from pman.backends.kit.streams import LogStream
from pman.errors import InvalidJobSpec, JobNotFound, UnsupportedOption
from pman.models import JobInfo, JobSpec, JobState, Reason, check_reason
from pman.settings import Settings


@dataclass(frozen=True)
class Outcome:
    """A job's state as an adapter works it out from the engine's objects."""

    state: JobState
    #: why, as JobInfo.reason: a Reason (a bare string is refused)
    reason: Reason = Reason.NONE
    message: str = ""
    exit_code: int | None = None

    def __post_init__(self) -> None:
        check_reason(self.reason, "Outcome")


@dataclass(frozen=True)
class Capabilities:
    """What jobs a backend can run as configured, declared without an engine
    call (for routing jobs between resources and for GET /api/v1/resources/);
    ``check`` refuses what these say it cannot."""

    #: it can give jobs GPUs (gpu_limit > 0)
    gpus: bool
    #: the most workers (number_of_workers) a job may have; None: any number
    max_workers: int | None
    #: several workers run as one engine job (an array, an indexed Job, replicas)
    array_workers: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "gpus": self.gpus,
            "max_workers": self.max_workers,
            "array_workers": self.array_workers,
        }


#: one container or process per job, no GPUs
SINGLE = Capabilities(gpus=False, max_workers=1, array_workers=False)
#: GPUs and any number of workers
ANY = Capabilities(gpus=True, max_workers=None, array_workers=True)


class ChangeStream(Protocol):
    """The engine's own notifications that some of pman's jobs changed.

    Iterating blocks until the next notification and yields the name of a
    job that may have ended or gone (the tracker then asks the engine about
    it directly, as an engine's list may lag behind its events), or "" for
    other changes (started, say); iteration ends when the stream breaks.
    ``close`` may be called from another thread to end it.
    """

    def __iter__(self) -> Iterator[str]: ...

    def close(self) -> None: ...


class Backend(ABC):
    """One compute engine. Adapters raise only pman's own exceptions (pman.errors)."""

    #: the CONTAINER_ENV value that selects this backend
    name: ClassVar[str]
    #: job names the engine accepts, and the rule in words for error messages
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
    name_rule: ClassVar[str] = (
        "1 to 128 characters: letters, digits, '_', '.', '-', starting with a letter or digit"
    )

    #: the compute resource this instance serves (pman.settings.Resource.name);
    #: set by whoever builds it for a resource (pman.resources)
    resource: str = "default"

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """Build the backend. Must not make network calls."""

    @property
    def capabilities(self) -> Capabilities:
        """What this backend can run, as configured (see :class:`Capabilities`)."""
        return ANY

    def check_name(self, name: str) -> None:
        """Raise InvalidJobSpec (field ``jid``) if the engine cannot use ``name``."""
        if not self.name_pattern.fullmatch(name):
            raise InvalidJobSpec(
                f"jid {name!r} cannot be used as a {self.name} job name: {self.name_rule}",
                fields={"jid": self.name_rule},
            )

    def check(self, spec: JobSpec) -> None:  # noqa: B027 - optional hook
        """Raise UnsupportedOption (naming the request's field) for a job this
        backend can never run as configured: several workers where it runs one
        container per job, GPUs it cannot give... No engine call: the service
        asks before it records the job, also one that would wait in pman's
        queue, so such a job is a 400 and never recorded. Conditions only the
        engine can see (no node with a free GPU) are left to ``submit``."""

    @abstractmethod
    def submit(self, spec: JobSpec) -> JobInfo:
        """Create and start the job. Raises JobExists if the name is taken."""

    @abstractmethod
    def get(self, name: str) -> JobInfo:
        """The job's current state. Raises JobNotFound."""

    def find(self, name: str) -> JobInfo | None:
        """The job's current state, or None when the engine has no such job of pman's."""
        try:
            return self.get(name)
        except JobNotFound:
            return None

    @abstractmethod
    def logs(self, name: str, tail: int) -> str:
        """The last ``tail`` lines of the job's combined stdout and stderr."""

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The job's whole log (or its last ``tail`` lines, or what it wrote at
        or after ``since``) as chunks of bytes, never the whole log in memory;
        with ``follow`` the iterator keeps going until the job ends.

        Raises JobNotFound (and other pman errors) when CALLED, so the caller
        can answer with an error before the first byte; closing the iterator
        releases whatever engine stream it holds. This default serves engines
        without a streaming log call: what ``logs`` gives, no ``since`` and no
        ``follow``.
        """
        if since is not None or follow:
            option = "since" if since is not None else "follow"
            raise UnsupportedOption(
                f"the {self.name} backend cannot give a job's logs with {option!r}",
                fields={option: f"not supported by the {self.name} backend"},
            )
        text = self.logs(name, tail if tail is not None else DEFAULT_FULL_LOG_LINES)
        data = text.encode()
        return iter([data] if data else [])

    def _file_logs(
        self,
        name: str,
        path: Path,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        poll: float = 0.2,
    ) -> Iterator[bytes]:
        """``iter_logs`` for engines that keep a job's output in a plain file
        (no timestamps: ``since`` is refused); a follow ends when ``get`` says
        the job has ended or is gone."""
        if since is not None:
            raise UnsupportedOption(
                f"the {self.name} backend cannot filter logs by time: a job's output file "
                "has no timestamps",
                fields={"since": f"not supported by the {self.name} backend"},
            )

        def ended() -> bool:
            try:
                return self.get(name).state.finished
            except JobNotFound:
                return True  # deleted meanwhile

        stop = threading.Event()
        return LogStream(
            read_file_chunks(path, tail, ended if follow else None, poll=poll, stop=stop),
            on_abort=stop.set,
        )

    def cancel(self, name: str) -> None:
        """Stop the job's work but keep what holds its logs and its final state.

        Cancelling a finished job is a no-op; an unknown job raises JobNotFound.
        """
        raise UnsupportedOption(
            f"the {self.name} backend cannot cancel a job; DELETE removes it",
            fields={"jid": f"cancel is not supported by the {self.name} backend"},
        )

    @abstractmethod
    def delete(self, name: str) -> None:
        """Stop the job if it runs and remove it. Deleting twice is not an error."""

    @abstractmethod
    def list(self) -> list[JobInfo]:
        """Every job pman created that the engine knows, in ONE engine call.

        The state may be coarser than ``get`` gives (no OOM flag, say): the
        tracker calls ``get`` for a job whose state changed.
        """

    def list_active(self) -> list[JobInfo]:
        """Jobs not finished yet, in one engine call; engines that can filter
        on their side override this so a cycle's cost follows running jobs only."""
        return [info for info in self.list() if not info.state.finished]

    def watch(self) -> ChangeStream | None:
        """The engine's event stream for pman's jobs, or None if it has none.

        With a stream the tracker looks as soon as something changes and polls
        only as a safety net; without one it polls every PMAN_TRACKER_INTERVAL.
        Raises BackendUnavailable when the engine cannot be reached.
        """
        return None

    @abstractmethod
    def ping(self) -> None:
        """Return if the engine answers, else raise BackendUnavailable."""

    def describe(self) -> str:
        """A few words naming the engine and where it is, for messages."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""
