"""What the tracker follows and reports: a compute resource's lane, a cycle's report."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pman.backends.base import Backend, ChangeStream
from pman.storage import Storage


@dataclass
class CycleReport:
    """What one tracker cycle did (for logs, tests and the benchmark)."""

    engine_calls: int = 0
    watched: int = 0
    updated: int = 0
    adopted: int = 0
    vanished: int = 0
    reconciled: bool = False
    #: jobs started from pman's queue
    started: int = 0
    #: withdrawn submissions removed from the engine and forgotten
    withdrawn: int = 0
    #: resources whose engine could not be reached this cycle
    unavailable: list[str] = field(default_factory=list)


@dataclass
class Lane:
    """One compute resource as the tracker follows it: its engine, and how
    its jobs are run and started from its queue."""

    name: str
    backend: Backend
    logs_tail: int
    max_running: int = 0
    storage: Storage | None = None
    #: reconcile this resource's engine at the next cycle (after an outage)
    needs_reconcile: bool = True
    #: its engine's event stream, while open
    stream: ChangeStream | None = None
    watching: bool = False
    thread: threading.Thread | None = None
