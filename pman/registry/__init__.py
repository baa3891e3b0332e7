"""The job registry: every job pman accepted, its state and its transitions.

One concern a module:

- ``schema``: the tables and the database engine;
- ``records``: job records, events, pages and every read of them (the poll
  path's prebuilt query among them);
- ``writes``: new records, and each change of one as
  ``pman.lifecycle.transition`` decides it (compare and set);
- ``queue``: pman's capacity queue (PMAN_MAX_RUNNING) and its gate;
- ``outbox``: the webhook deliveries each transition owes;
- ``migrate`` and ``migrations/``: the schema's Alembic migrations, applied
  once at start-up under a database lock.

``Registry`` puts them together; every public method is one short transaction.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pman.errors import JobExists
from pman.lifecycle import Phase, Reason, admission, queue_message
from pman.models import JobSpec
from pman.registry import migrate
from pman.registry.outbox import Delivery
from pman.registry.queue import CapacityQueue, take_turn
from pman.registry.records import (
    DEFAULT_RESOURCE,
    Event,
    JobRecord,
    Page,
    RegistryUnavailable,
    db,
    decode_cursor,
    encode_cursor,
    now,
)
from pman.registry.schema import (
    ACTIVE_BY_JID,
    UNFINISHED,
    gate,
    job_events,
    job_labels,
    jobs,
    make_engine,
    metadata,
    webhook_deliveries,
)
from pman.registry.writes import spec_json

__all__ = [
    "ACTIVE_BY_JID",
    "CANCELLED_REASON",
    "DEFAULT_RESOURCE",
    "QUEUE_REASON",
    "UNFINISHED",
    "WITHDRAW_REASON",
    "Delivery",
    "Event",
    "JobRecord",
    "Page",
    "Registry",
    "RegistryUnavailable",
    "Withdrawing",
    "decode_cursor",
    "encode_cursor",
    "gate",
    "job_events",
    "job_labels",
    "jobs",
    "make_engine",
    "metadata",
    "now",
    "queue_message",
    "webhook_deliveries",
]

log = logging.getLogger(__name__)

#: the reasons clients see of a job in pman's queue, of a withdrawn submission
#: and of a user's cancel (kept for the code and tests that name them so; the
#: registry's own decisions read the phase)
QUEUE_REASON = Reason.PMAN_QUEUE
WITHDRAW_REASON = Reason.PMAN_WITHDRAW
CANCELLED_REASON = Reason.CANCELLED


class Withdrawing(JobExists):
    """The jid's record is a submission being withdrawn (Phase.WITHDRAWN)."""


class Registry(CapacityQueue):
    """Job records, their labels, their events and their webhook deliveries."""

    @classmethod
    def from_url(cls, url: str) -> Registry:
        registry = cls(make_engine(url))
        registry.create_schema()
        return registry

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def create_schema(self, attempts: int = 8) -> None:
        """Bring the database's schema to this pman's (pman.registry.migrate).
        Workers starting together take turns under a database lock; should one
        still lose a race (a new SQLite file locked while another process
        turns on WAL), it tries again, a little later each time."""
        for attempt in range(1, attempts + 1):
            try:
                self._create_schema()
                return
            except SQLAlchemyError as e:
                if attempt == attempts:
                    raise
                log.debug("schema creation raced (attempt %d): %s", attempt, e)
                time.sleep(0.05 * attempt)

    def _create_schema(self) -> None:
        migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @db
    def create(
        self,
        spec: JobSpec,
        backend: str,
        max_running: int = 0,
        *,
        resource: str = DEFAULT_RESOURCE,
    ) -> JobRecord:
        """Record a job about to be submitted; JobExists if its jid has an active job
        (Withdrawing if that job is a withdrawn submission).

        With ``max_running`` > 0, the job is submitted only if fewer jobs of
        ``backend`` on ``resource`` are on the engine and none waits in that
        resource's queue; otherwise it is recorded as waiting (Phase.QUEUED)
        and the tracker starts it later.
        """
        values = {
            "jid": spec.name,
            "backend": backend,
            "image": spec.image,
            "cmd": spec.command,
            "auid": spec.auid,
            "spec": spec_json(spec),
            "fingerprint": spec.fingerprint,
            "callback_url": spec.callback_url,
            "resource": resource,
        }
        try:
            with self.engine.begin() as conn:
                waiting = None
                if max_running > 0:
                    take_turn(conn)
                    waiting = self._admit(conn, backend, max_running, resource)
                values.update(admission(waiting, max_running))
                job_id = self._insert_in(conn, values, spec.labels, "submitted")
            return self.get(job_id)
        except IntegrityError as e:
            existing = self.find_active(spec.name)
            error = Withdrawing if existing and existing.phase is Phase.WITHDRAWN else JobExists
            raise error(
                f"job {spec.name!r} exists already",
                existing=existing.info() if existing else None,
            ) from e
