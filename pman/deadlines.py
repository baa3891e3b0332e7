"""When a request's answer is due: shared by the server, which gives up on a
request at its deadline, and the service, which must not report success for
work done after the client was told it failed."""

from __future__ import annotations

import threading
import time


class Deadline:
    """When a request's answer is due, and who decided its outcome first.

    The server gives up on a request at ``at`` (503); the service, about to
    answer success after the engine acted, must ``commit`` first. Exactly one
    of the two wins, so a job is never both refused to the client and left on
    the engine: a service that cannot commit undoes what the engine did.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self._lock = threading.Lock()
        self._outcome: str | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def commit(self) -> bool:
        """True if the request's answer will be sent; False if it was (or is
        now, being past due) given up, and what was done must be undone."""
        with self._lock:
            if self._outcome is None:
                self._outcome = "committed" if time.monotonic() < self.at else "abandoned"
            return self._outcome == "committed"

    def abandon(self) -> bool:
        """True if the request is given up now; False if the service committed
        already (its answer is on its way: wait for it)."""
        with self._lock:
            if self._outcome is None:
                self._outcome = "abandoned"
            return self._outcome == "abandoned"
