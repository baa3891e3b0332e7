"""An in-memory backend that records what it is asked, for API tests."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import UTC, datetime

from pman.backends.base import Backend
from pman.errors import JobExists, JobNotFound, PmanError
from pman.models import JobInfo, JobSpec, JobState
from pman.settings import Settings


class FakeBackend(Backend):
    name = "fake"

    def __init__(self) -> None:
        self.jobs: dict[str, JobInfo] = {}
        self.specs: dict[str, JobSpec] = {}
        self.logs_text: dict[str, str] = {}
        self.deleted: list[str] = []
        self.cancelled: list[str] = []
        #: (name, tail, since, follow) of every iter_logs call
        self.log_requests: list[tuple[str, int | None, datetime | None, bool]] = []
        #: raised by every call when set (simulates an engine failure)
        self.fail_with: Exception | None = None
        self.calls: list[str] = []
        #: set to a FakeEvents to give this engine an event stream
        self.events: FakeEvents | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeBackend:
        return cls()

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.fail_with is not None:
            raise self.fail_with

    def submit(self, spec: JobSpec) -> JobInfo:
        self._maybe_fail("submit")
        if spec.name in self.jobs:
            raise JobExists("exists", existing=self.jobs[spec.name])
        info = JobInfo(
            name=spec.name,
            state=JobState.RUNNING,
            image=spec.image,
            command=spec.command,
            message="started",
            started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            fingerprint=spec.fingerprint,
        )
        self.jobs[spec.name] = info
        self.specs[spec.name] = spec
        return info

    def get(self, name: str) -> JobInfo:
        self._maybe_fail("get")
        try:
            return self.jobs[name]
        except KeyError:
            raise JobNotFound(f"no job {name}") from None

    def logs(self, name: str, tail: int) -> str:
        self._maybe_fail("logs")
        lines = self.logs_text.get(name, "").splitlines(keepends=True)
        return "".join(lines[-tail:]) if tail else ""

    def cancel(self, name: str) -> None:
        self._maybe_fail("cancel")
        info = self.get(name)
        if not info.state.finished:
            # what a container engine reports for a stopped container
            self.set_state(name, JobState.FAILED, exit_code=137, message="exited with code 137")
        self.cancelled.append(name)

    def iter_logs(
        self,
        name: str,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        self._maybe_fail("iter_logs")
        self.get(name)
        self.log_requests.append((name, tail, since, follow))
        lines = self.logs_text.get(name, "").splitlines(keepends=True)
        if tail is not None:
            lines = lines[-tail:] if tail else []
        return (line.encode() for line in lines)

    def delete(self, name: str) -> None:
        self._maybe_fail("delete")
        self.jobs.pop(name, None)
        self.deleted.append(name)

    def list(self) -> list[JobInfo]:
        self._maybe_fail("list")
        return list(self.jobs.values())

    def ping(self) -> None:
        self._maybe_fail("ping")

    def watch(self) -> FakeEvents | None:
        self._maybe_fail("watch")
        return self.events

    def set_state(self, name: str, state: JobState, **kw: object) -> None:
        old = self.jobs[name]
        self.jobs[name] = JobInfo(
            name=name,
            state=state,
            image=old.image,
            command=old.command,
            fingerprint=old.fingerprint,
            started_at=old.started_at,
            **kw,  # type: ignore[arg-type]
        )


class FakeEvents:
    """An event stream the test feeds: ``push(name)``; closing ends it."""

    _END = object()

    def __init__(self) -> None:
        self._q: queue.Queue[object] = queue.Queue()

    def push(self, name: str) -> None:
        self._q.put(name)

    def __iter__(self) -> Iterator[str]:
        while (item := self._q.get()) is not self._END:
            yield str(item)

    def close(self) -> None:
        self._q.put(self._END)


__all__ = ["FakeBackend", "FakeEvents", "PmanError"]
