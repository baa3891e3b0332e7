"""pman's capacity queue (PMAN_MAX_RUNNING): jobs beyond the limit wait in the
registry (Phase.QUEUED) and the tracker starts them, oldest first.

Every decision on the queue takes its turn at the gate row first, so no two
transactions (HTTP workers admitting jobs, the tracker claiming them) hand
out the same free slot.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pman.errors import JobNotFound
from pman.lifecycle import Claimed, Dequeued, Phase, Report, Unclaimed, queue_message
from pman.models import JobState
from pman.registry.records import DEFAULT_RESOURCE, JobRecord, db, labels_of
from pman.registry.schema import UNFINISHED, gate, jobs
from pman.registry.writes import RecordWrites

GATE = "queue"


def make_gate(conn: Any) -> None:
    """The gate's row, if it is not there yet."""
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    conn.execute(dialect_insert(gate).values(name=GATE, turns=0).on_conflict_do_nothing())


def take_turn(conn: Any) -> None:
    """Wait for the other transactions deciding on the queue; must be the
    transaction's first statement (a write: SQLite then takes its write lock
    before reading anything, so what it reads next is the latest)."""
    turn = update(gate).where(gate.c.name == GATE).values(turns=gate.c.turns + 1)
    if conn.execute(turn).rowcount == 0:
        # the row is made with the schema; should it be gone, make it again
        make_gate(conn)
        conn.execute(turn)


def count(conn: Any, backend: str, *, queued: bool, resource: str = DEFAULT_RESOURCE) -> int:
    """Jobs of ``backend`` on ``resource`` waiting in its queue (``queued``), or
    else the unfinished ones pman has given (or is giving) to its engine."""
    waiting = jobs.c.phase == Phase.QUEUED.value
    query = select(func.count()).where(
        and_(
            jobs.c.active,
            jobs.c.resource == resource,
            jobs.c.backend == backend,
            jobs.c.state.in_(UNFINISHED),
            waiting if queued else ~waiting,
        )
    )
    return int(conn.execute(query).scalar_one())


def _waiting(backend: str | None = None, resource: str | None = None) -> Any:
    conditions = [
        jobs.c.active,
        jobs.c.state == JobState.QUEUED.value,
        jobs.c.phase == Phase.QUEUED.value,
    ]
    if backend is not None:
        conditions.append(jobs.c.backend == backend)
    if resource is not None:
        conditions.append(jobs.c.resource == resource)
    return and_(*conditions)


class CapacityQueue(RecordWrites):
    """The queue's decisions: admit, claim, put back, dequeue."""

    @staticmethod
    def _admit(
        conn: Any, backend: str, max_running: int, resource: str = DEFAULT_RESOURCE
    ) -> int | None:
        """In a transaction that took its turn: None if a new job of ``backend``
        on ``resource`` may go to the engine now, else how many jobs wait ahead of it."""
        waiting = count(conn, backend, queued=True, resource=resource)
        if waiting or count(conn, backend, queued=False, resource=resource) >= max_running:
            return waiting
        return None

    def _apply_gated(self, job_id: int, report: Report) -> bool:
        """A queue transition, at its turn: the record cannot change under it."""
        with self.engine.begin() as conn:
            take_turn(conn)
            try:
                decision = self._apply_in(conn, job_id, report)
            except JobNotFound:
                return False
        return decision is not None and not decision.ignored

    @db
    def claim_next(
        self, backend: str, max_running: int, *, resource: str = DEFAULT_RESOURCE
    ) -> JobRecord | None:
        """The oldest job waiting in ``resource``'s queue, taken out of it to be
        submitted now, if fewer than ``max_running`` jobs are on its engine; else None."""
        with self.engine.begin() as conn:
            take_turn(conn)
            if count(conn, backend, queued=False, resource=resource) >= max_running:
                return None
            job_id = conn.execute(
                select(jobs.c.id).where(_waiting(backend, resource)).order_by(jobs.c.id).limit(1)
            ).scalar()
            if job_id is None:
                return None
            decision = self._apply_in(conn, job_id, Claimed())
            if decision is None or decision.ignored:
                return None
        return self.get(job_id)

    @db
    def unclaim(self, job_id: int, why: str) -> None:
        """Put a claimed job back in the queue, in its place (the engine could not
        be reached: the job is not at fault)."""
        self._apply_gated(job_id, Unclaimed(why=why))

    @db
    def dequeue(self, job_id: int) -> bool:
        """Delete a job that still waits in pman's queue (it never reached the
        engine); False if it has left the queue meanwhile."""
        return self._apply_gated(job_id, Dequeued())

    @db
    def refresh_queue_messages(
        self, backend: str, max_running: int, *, resource: str = DEFAULT_RESOURCE
    ) -> int:
        """Say again how many jobs are ahead of each waiting job of ``resource``;
        returns how many waited."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.message)
                .where(_waiting(backend, resource))
                .order_by(jobs.c.id)
            ).all()
            for ahead, row in enumerate(rows):
                message = queue_message(ahead, max_running)
                if row.message != message:
                    conn.execute(
                        update(jobs)
                        .where(and_(jobs.c.id == row.id, jobs.c.phase == Phase.QUEUED.value))
                        .values(message=message)
                    )
        return len(rows)

    @db
    def count_queued(self) -> int:
        """Jobs waiting in pman's queue, every backend (for /metrics)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(_waiting())).scalar_one())

    @db
    def occupancy(self, backend: str, resource: str = DEFAULT_RESOURCE) -> tuple[int, int]:
        """(jobs on ``resource``'s engine or being given to it, jobs waiting in its queue)."""
        with self.engine.connect() as conn:
            return (
                count(conn, backend, queued=False, resource=resource),
                count(conn, backend, queued=True, resource=resource),
            )

    @db
    def count_queued_by_resource(self) -> dict[str, int]:
        """Jobs waiting in pman's queue, by resource (for /metrics and the resources list)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.resource, func.count()).where(_waiting()).group_by(jobs.c.resource)
            )
            return {r[0]: r[1] for r in rows}

    @db
    def queued_spec(self, job_id: int) -> tuple[dict[str, Any], dict[str, str], str]:
        """What was recorded of a job's JobSpec to start it later: the spec's JSON
        (``spec_json``), its labels and its fingerprint."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(jobs.c.spec, jobs.c.fingerprint).where(jobs.c.id == job_id)
            ).first()
            if row is None or row.spec is None:
                raise JobNotFound(f"no job record {job_id} with its request")
            return dict(row.spec), labels_of(conn, [job_id]).get(job_id, {}), row.fingerprint
