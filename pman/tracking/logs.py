"""The tracker's copy of running jobs' logs: refreshed in a thread of its own
at most every ``logs_every`` seconds per job and at most ``LOGS_CALLS_PER_S``
engine calls a second in all, so a poll never asks an engine for anything."""

from __future__ import annotations

import logging
import threading
import time

from pman.errors import BackendUnavailable, PmanError
from pman.registry import Registry
from pman.tracking.lanes import Lane

log = logging.getLogger("pman.tracker")

#: the most logs calls a second the tracker makes for running jobs
LOGS_CALLS_PER_S = 20.0


class LogsRefresher:
    """Keeps running jobs' logs in the registry (a part of pman.tracker.Tracker)."""

    registry: Registry
    logs_every: float
    lanes: list[Lane]
    _stop: threading.Event
    _leading: bool
    #: running jobs (record id -> (its lane, jid)) as of the last cycle
    _running: dict[int, tuple[Lane, str]]
    #: record id -> (when its logs were last fetched, hash of what they were)
    _logs_seen: dict[int, tuple[float, int | None]]

    def _run_logs(self) -> None:
        while not self._stop.is_set():
            if self._leading:
                try:
                    self.refresh_logs()
                except BackendUnavailable:
                    pass  # the state cycle reports the outage
                except Exception:
                    log.exception("tracker: refreshing running jobs' logs failed")
            self._stop.wait(0.25)

    def refresh_logs(self) -> int:
        """Fetch the logs of running jobs whose copy is older than ``logs_every``,
        oldest first, pacing engine calls to ``LOGS_CALLS_PER_S``; store those
        that changed. Returns the number of engine calls made. A resource whose
        engine does not answer is skipped until the next round."""
        running = dict(self._running)
        for job_id in set(self._logs_seen) - set(running):
            del self._logs_seen[job_id]
        now = time.monotonic()
        never = (0.0, None)
        due = sorted(
            (self._logs_seen.get(job_id, never)[0], job_id)
            for job_id in running
            if now - self._logs_seen.get(job_id, never)[0] >= self.logs_every
        )
        calls = 0
        down: set[str] = set()
        for _, job_id in due:
            if self._stop.is_set():
                break
            lane, jid = running[job_id]
            if lane.name in down:
                continue
            started = time.monotonic()
            try:
                logs = lane.backend.logs(jid, lane.logs_tail)
            except BackendUnavailable:
                if len(self.lanes) == 1:
                    raise
                down.add(lane.name)
                continue
            except PmanError:
                logs = None  # gone meanwhile: the state cycle will say so
            calls += 1
            digest = None if logs is None else hash(logs)
            if digest is not None and digest != self._logs_seen.get(job_id, never)[1]:
                self.registry.set_running_logs(job_id, logs)  # type: ignore[arg-type]
            self._logs_seen[job_id] = (time.monotonic(), digest)
            self._stop.wait(max(0.0, 1.0 / LOGS_CALLS_PER_S - (time.monotonic() - started)))
        return calls

    def _final_logs(self, lane: Lane, jid: str) -> str:
        try:
            return lane.backend.logs(jid, lane.logs_tail)
        except PmanError as e:
            if isinstance(e, BackendUnavailable):
                raise
            return ""
