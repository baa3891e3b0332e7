"""A job's log from its pods' logs: the newest pod of each worker, each line
prefixed ``[worker i]`` when there are several."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import urllib3

from pman.backends.kit.files import LOG_CHUNK
from pman.backends.kit.streams import LogStream, shutdown_response
from pman.backends.kubernetes.client import FOLLOW_POLL_S, KubeClient
from pman.backends.kubernetes.state import job_state, newest_pods, workers_of


def log_options(tail: int | None, since: datetime | None, now: datetime) -> dict[str, Any] | None:
    """``read_namespaced_pod_log``'s options for ``tail`` lines written at or
    after ``since``; None when no line is asked for (``tail`` 0)."""
    options: dict[str, Any] = {}
    if tail is not None:
        if tail == 0:
            return None
        options["tail_lines"] = tail
    if since is not None:
        seconds = (now - since).total_seconds()
        options["since_seconds"] = max(1, math.ceil(seconds))
    return options


def joined_tails(texts: Iterable[tuple[int, str]], workers: int, tail: int) -> str:
    """The last ``tail`` lines of the workers' logs, (index, text) in order,
    one after the other; several workers' lines prefixed ``[worker i]``."""
    lines: list[str] = []
    for i, text in texts:
        for line in text.splitlines(keepends=True):
            lines.append(f"[worker {i}] {line}" if workers > 1 else line)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines[-tail:])


def prefixed(chunks: Iterable[bytes], prefix: bytes) -> Iterator[bytes]:
    """``chunks`` with ``prefix`` before each line; a line longer than
    LOG_CHUNK comes in pieces, each prefixed; the last line ends with a newline."""
    pending = b""
    for data in chunks:
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        if lines:
            yield b"".join(prefix + line + b"\n" for line in lines)
        if len(pending) >= LOG_CHUNK:
            yield prefix + pending
            pending = b""
    if pending:
        yield prefix + pending + b"\n"


class PodLogs:
    """The logs of a job's pods, read through ``kube``."""

    def __init__(self, kube: KubeClient, pending_timeout: float) -> None:
        self.kube = kube
        self.pending_timeout = pending_timeout

    def tail(self, job: dict[str, Any], tail: int) -> str:
        """The last ``tail`` lines of the Job's pods' logs (``tail`` > 0)."""
        newest = newest_pods(self.kube.pods_of(job))
        texts = (
            (i, self.kube.pod_log(newest[i]["metadata"]["name"], tail)) for i in sorted(newest)
        )
        return joined_tails(texts, workers_of(job), tail)

    def stream(
        self,
        job: dict[str, Any],
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """Each worker's pod log in turn (several workers: each line prefixed
        ``[worker i]``, ``tail`` per worker), streamed with
        ``read_namespaced_pod_log(_preload_content=False)``; following, each
        worker's stream ends with its pod, one not started yet is waited for."""
        options = log_options(tail, since, datetime.now(UTC))
        if options is None:
            return iter([])
        read = _WorkerLogs(self, job["metadata"]["name"], workers_of(job), follow, options)
        return LogStream(iter(read), read.abort)


class _WorkerLogs:
    """One stream of a job's workers' logs, which ``abort`` ends from any thread."""

    def __init__(
        self, logs: PodLogs, name: str, workers: int, follow: bool, options: dict[str, Any]
    ) -> None:
        self.kube = logs.kube
        self.pending_timeout = logs.pending_timeout
        self.name = name
        self.workers = workers
        self.follow = follow
        self.options = options
        self.stop = threading.Event()
        #: the pod log being read, which an abort interrupts
        self.reading: list[urllib3.HTTPResponse] = []

    def abort(self) -> None:
        self.stop.set()
        for response in list(self.reading):
            shutdown_response(response)

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.workers) if self.workers > 1 else [None]:
            pod = None
            while True:
                job = self.kube.owned_job(self.name)
                if job is None:
                    return  # deleted meanwhile
                pods = newest_pods(self.kube.pods_of(job))
                pod = pods.get(i if i is not None else min(pods, default=0))
                if pod is not None or not self.follow or self._ended(job, pods):
                    break
                if self.stop.wait(FOLLOW_POLL_S):
                    return
            if pod is None:
                continue
            prefix = f"[worker {i}] ".encode() if i is not None else b""
            yield from self._pod_log(pod["metadata"]["name"], prefix)

    def _ended(self, job: dict[str, Any], pods: dict[int, dict[str, Any]]) -> bool:
        now = datetime.now(UTC)
        return job_state(job, list(pods.values()), self.pending_timeout, now).state.finished

    def _pod_log(self, pod: str, prefix: bytes) -> Iterator[bytes]:
        response = self.kube.open_pod_log(pod, self.follow, self.options, self.stop)
        if response is None:
            return
        self.reading[:] = [response]
        if self.stop.is_set():  # aborted while it was being opened
            shutdown_response(response)
        try:
            with self.kube.errors.doing(f"streaming the logs of pod {pod!r}"):
                chunks = response.stream(LOG_CHUNK, decode_content=True)
                yield from (prefixed(chunks, prefix) if prefix else chunks)
        finally:
            response.release_conn()
            response.close()
