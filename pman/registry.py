"""The job registry: every job pman accepted, its state and its transitions.

SQLAlchemy 2 Core over SQLite (default, a file under PMAN_DATA_DIR) or
PostgreSQL (PMAN_DATABASE_URL), with the same code. A job's record outlives
its DELETE, so history survives; ``active`` marks the one current job of a
jid, and a new POST after DELETE makes a new record.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from pman.errors import BackendUnavailable, JobExists, JobNotFound
from pman.models import JobInfo, JobSpec, JobState

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("jid", String(255), nullable=False),
    #: True for the current job of a jid; False once deleted
    Column("active", Boolean, nullable=False, default=True),
    Column("backend", String(32), nullable=False),
    #: the engine's own id (container id, job id...)
    Column("native_id", String(255)),
    Column("state", String(16), nullable=False),
    Column("exit_code", Integer),
    Column("reason", String(64), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("image", Text, nullable=False, default=""),
    Column("cmd", JSON, nullable=False),
    Column("auid", String(255), nullable=False, default=""),
    Column("spec", JSON),
    Column("fingerprint", String(64)),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
    #: the logs' last lines: refreshed by the tracker while the job runs, final once it ends
    Column("logs", Text),
    #: where the job's transitions are POSTed (the request's callback_url); added
    #: to older registries at start-up (see Registry._add_missing_columns)
    Column("callback_url", Text),
)
Index(
    "jobs_one_active_jid",
    jobs.c.jid,
    unique=True,
    sqlite_where=jobs.c.active,
    postgresql_where=jobs.c.active,
)
# the poll path's lookup; the partial unique index above cannot serve it in
# SQLite, whose planner does not see "active = 1" as implying "WHERE active"
Index("jobs_by_jid", jobs.c.jid, jobs.c.active)
Index("jobs_unfinished", jobs.c.active, jobs.c.state)
Index("jobs_by_state", jobs.c.state, jobs.c.id)
Index("jobs_by_auid", jobs.c.auid, jobs.c.id)

job_labels = Table(
    "job_labels",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)
Index("job_labels_by_pair", job_labels.c.key, job_labels.c.value, job_labels.c.job_id)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("message", Text, nullable=False, default=""),
)
Index("job_events_by_job", job_events.c.job_id, job_events.c.id)

#: one row that transactions deciding on the capacity queue update first: on
#: PostgreSQL the row lock, on SQLite the database's write lock, makes them
#: take turns, so no two of them hand out the same free slot
gate = Table(
    "pman_gate",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("turns", Integer, nullable=False, default=0),
)
_QUEUE_GATE = "queue"
#: the ``reason`` of a job waiting in pman's own queue (PMAN_MAX_RUNNING): it is
#: QUEUED and not on the engine yet
QUEUE_REASON = "pman_queue"
#: the ``reason`` of a job whose POST was answered 503 while the engine might
#: still act on it (a call that timed out may yet be carried out): it is kept
#: only so that its jid stays taken until the tracker has removed whatever the
#: engine made of it; then the record is forgotten. Polls do not show it.
WITHDRAW_REASON = "pman_withdraw"
#: the webhook outbox: one row per transition and target, written in the same
#: transaction as the transition's event, so a crash cannot lose a delivery;
#: the tracker's leader sends them (pman.webhooks.Deliverer)
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, ForeignKey("job_events.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    #: "callback" (the job's callback_url) or "global" (PMAN_WEBHOOK_URL)
    Column("target", String(16), nullable=False),
    Column("url", Text, nullable=False),
    #: the transition as it was: jid, state, message, exit_code, at
    Column("payload", JSON, nullable=False),
    #: pending, delivered or failed
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    #: when it was delivered, or given up
    Column("finished_at", DateTime(timezone=True)),
)
Index("webhook_deliveries_due", webhook_deliveries.c.state, webhook_deliveries.c.id)
Index("webhook_deliveries_by_job", webhook_deliveries.c.job_id, webhook_deliveries.c.id)

#: a record's columns: all but the request (``spec``), which only the table keeps
_RECORD = [c for c in jobs.c if c.key != "spec"]
#: built once: the poll path runs it for every GET
_ACTIVE_BY_JID = select(*_RECORD).where(and_(jobs.c.jid == bindparam("jid"), jobs.c.active))

#: tries of a compare-and-set write before giving up
_CAS_ATTEMPTS = 10

#: the reason of a record a user cancelled (POST /api/v1/<jid>/cancel/): its
#: state is final, whatever the engine says afterwards (docker: exited 137)
CANCELLED_REASON = "cancelled"

UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.UNKNOWN.value)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; every time pman keeps is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobRecord:
    """One row of the registry."""

    id: int
    jid: str
    active: bool
    backend: str
    native_id: str | None
    state: JobState
    exit_code: int | None
    reason: str
    message: str
    image: str
    cmd: list[str]
    auid: str
    fingerprint: str | None
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    deleted_at: datetime | None
    logs: str | None
    labels: dict[str, str] = field(default_factory=dict)
    callback_url: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], labels: dict[str, str] | None = None) -> JobRecord:
        return cls(
            id=row["id"],
            jid=row["jid"],
            active=bool(row["active"]),
            backend=row["backend"],
            native_id=row["native_id"],
            state=JobState(row["state"]),
            exit_code=row["exit_code"],
            reason=row["reason"] or "",
            message=row["message"] or "",
            image=row["image"] or "",
            cmd=list(row["cmd"] or []),
            auid=row["auid"] or "",
            fingerprint=row["fingerprint"],
            submitted_at=_utc(row["submitted_at"]),  # type: ignore[arg-type]
            started_at=_utc(row["started_at"]),
            finished_at=_utc(row["finished_at"]),
            updated_at=_utc(row["updated_at"]),  # type: ignore[arg-type]
            deleted_at=_utc(row["deleted_at"]),
            logs=row["logs"],
            labels=labels or {},
            callback_url=row.get("callback_url"),
        )

    def info(self) -> JobInfo:
        return JobInfo(
            name=self.jid,
            state=self.state,
            image=self.image,
            command=self.cmd,
            exit_code=self.exit_code,
            reason=self.reason,
            message=self.message,
            created_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            fingerprint=self.fingerprint,
        )


@dataclass(frozen=True)
class Event:
    at: datetime
    state: JobState
    message: str


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery of the outbox."""

    id: int
    event_id: int
    job_id: int
    target: str
    url: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    finished_at: datetime | None
    #: the job's record says its submission is still in flight (it may yet be forgotten)
    submitting: bool = False


@dataclass(frozen=True)
class Page:
    records: list[JobRecord]
    #: opaque cursor for the next page, None on the last page
    next_cursor: str | None


def encode_cursor(job_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": job_id}).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        before = int(value["before"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError("not a cursor this service gave out") from e
    return before


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL: readers (every HTTP worker answering polls) never wait for the
    # tracker's writes; foreign keys for the cascades.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class RegistryUnavailable(BackendUnavailable):
    """The job registry's database cannot be used."""


def _db(method: Callable[P, R]) -> Callable[P, R]:
    """Database failures leave the registry as one pman error (503), never a 500."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (OperationalError, InterfaceError) as e:
            raise RegistryUnavailable(
                f"the job registry's database is unavailable: {e.orig}"
            ) from e

    return wrapper


class _DirectQuery:
    """A fixed SELECT run straight on a pooled DBAPI connection.

    For the poll path: SQLAlchemy's per-execution work (execution context,
    result object) costs several times the query itself. The statement is
    still built and compiled by SQLAlchemy for the engine's dialect, and its
    values are converted by the column types' own result processors, so the
    rows are what ``conn.execute`` would give.
    """

    def __init__(self, engine: Engine, stmt: Select[Any]) -> None:
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = compiled.positional
        self.order = list(compiled.positiontup or [])
        # values of the statement's own literals; the caller gives the rest
        self.defaults = {name: bind.value for name, bind in compiled.binds.items()}
        self.names = [c.key for c in stmt.selected_columns]
        self.processors = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in stmt.selected_columns
        ]
        self.dbapi = dialect.loaded_dbapi

    def first(self, engine: Engine, **params: Any) -> dict[str, Any] | None:
        values = {**self.defaults, **params}
        args = tuple(values[k] for k in self.order) if self.positional else values
        conn = None
        try:
            conn = engine.raw_connection()
            cursor = conn.cursor()
            try:
                cursor.execute(self.sql, args)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except (self.dbapi.OperationalError, self.dbapi.InterfaceError) as e:
            if conn is not None:
                conn.invalidate(e)  # a broken connection must not go back to the pool
            raise RegistryUnavailable(f"the job registry's database is unavailable: {e}") from e
        finally:
            if conn is not None:
                conn.close()
        if row is None:
            return None
        return {
            name: (value if proc is None or value is None else proc(value))
            for name, proc, value in zip(self.names, self.processors, row, strict=True)
        }


class Registry:
    """Job records, their labels and their events. Every public method is one
    short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._active_by_jid = _DirectQuery(engine, _ACTIVE_BY_JID)
        #: PMAN_WEBHOOK_URL: every transition gets a delivery to it (configure_webhooks)
        self.webhook_url: str | None = None

    def configure_webhooks(self, global_url: str | None) -> None:
        """From now on every transition also queues a delivery to ``global_url``."""
        self.webhook_url = global_url

    @classmethod
    def from_url(cls, url: str) -> Registry:
        registry = cls(make_engine(url))
        registry.create_schema()
        return registry

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def create_schema(self, attempts: int = 8) -> None:
        """Create what is missing. Workers starting together race for it: the
        loser finds a table made meanwhile, or a new SQLite file locked while
        another process turns on WAL; it tries again, a little later each time."""
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
        metadata.create_all(self.engine)
        self._add_missing_columns()
        # create_all makes indexes only with new tables: add ones a newer pman defines
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)
        with self.engine.begin() as conn:
            self._make_gate(conn)

    def _add_missing_columns(self) -> None:
        """create_all never changes an existing table: add the (nullable) columns a
        newer pman defines to a registry an older one made. A worker that loses the
        race to add one fails here and create_schema tries again."""
        inspector = sa_inspect(self.engine)
        for table in metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                if not column.nullable:
                    raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name}")
                kind = column.type.compile(dialect=self.engine.dialect)
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
                    )
                log.info("registry: added column %s.%s", table.name, column.name)

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- writes
    @_db
    def create(self, spec: JobSpec, backend: str, max_running: int = 0) -> JobRecord:
        """Record a job about to be submitted; JobExists if its jid has an active job.

        With ``max_running`` > 0, the job is submitted only if fewer jobs of
        ``backend`` are on the engine and none waits in pman's queue; otherwise it
        is recorded as waiting (reason QUEUE_REASON) and the tracker starts it later.
        """
        values = {
            "jid": spec.name,
            "backend": backend,
            "state": JobState.QUEUED.value,
            "message": "submitting",
            "image": spec.image,
            "cmd": spec.command,
            "auid": spec.auid,
            "spec": _spec_json(spec),
            "fingerprint": spec.fingerprint,
            "callback_url": spec.callback_url,
        }
        try:
            if max_running <= 0:
                return self._insert(values, spec.labels, "submitted")
            with self.engine.begin() as conn:
                self._take_turn(conn)
                waiting = self._count(conn, backend, queued=True)
                if waiting or self._count(conn, backend, queued=False) >= max_running:
                    values["reason"] = QUEUE_REASON
                    values["message"] = queue_message(waiting, max_running)
                job_id = self._insert_in(conn, values, spec.labels, "submitted")
            return self.get(job_id)
        except IntegrityError as e:
            existing = self.find_active(spec.name)
            raise JobExists(
                f"job {spec.name!r} exists already",
                existing=existing.info() if existing else None,
            ) from e

    @_db
    def adopt(
        self,
        info: JobInfo,
        backend: str,
        auid: str,
        labels: dict[str, str],
        logs: str | None = None,
    ) -> JobRecord:
        """Record a job found on the engine that the registry did not know
        (with its final logs when it has finished, in the same transaction)."""
        values = {
            "jid": info.name,
            "backend": backend,
            "state": info.state.value,
            "exit_code": info.exit_code,
            "reason": info.reason,
            "message": info.message,
            "image": info.image,
            "cmd": info.command,
            "native_id": info.native_id,
            "auid": auid,
            "fingerprint": info.fingerprint,
            "submitted_at": info.created_at,
            "started_at": info.started_at,
            "finished_at": info.finished_at,
            "logs": logs,
        }
        return self._insert(values, labels, "adopted: found on the engine without a record")

    def _insert(self, values: dict[str, Any], labels: dict[str, str], event: str) -> JobRecord:
        """One new active job with its labels and its first event, in one transaction."""
        with self.engine.begin() as conn:
            job_id = self._insert_in(conn, values, labels, event)
        return self.get(job_id)

    def _insert_in(
        self, conn: Any, values: dict[str, Any], labels: dict[str, str], event: str
    ) -> int:
        t = now()
        row = {"active": True, "reason": "", "updated_at": t, **values}
        row["submitted_at"] = row.get("submitted_at") or t
        job_id = conn.execute(insert(jobs).values(**row)).inserted_primary_key[0]
        if labels:
            conn.execute(
                insert(job_labels),
                [{"job_id": job_id, "key": k, "value": v} for k, v in labels.items()],
            )
        self._event(
            conn,
            job_id,
            t,
            row["state"],
            event,
            jid=row["jid"],
            exit_code=row.get("exit_code"),
            callback_url=row.get("callback_url"),
        )
        return int(job_id)

    # ------------------------------------------------------- the capacity queue
    def _take_turn(self, conn: Any) -> None:
        """Wait for the other transactions deciding on the queue; must be the
        transaction's first statement (a write: SQLite then takes its write lock
        before reading anything, so what it reads next is the latest)."""
        turn = update(gate).where(gate.c.name == _QUEUE_GATE).values(turns=gate.c.turns + 1)
        if conn.execute(turn).rowcount == 0:
            # the row is made with the schema; should it be gone, make it again
            self._make_gate(conn)
            conn.execute(turn)

    def _make_gate(self, conn: Any) -> None:
        dialect_insert = sqlite_insert if self.is_sqlite else postgresql_insert
        conn.execute(
            dialect_insert(gate).values(name=_QUEUE_GATE, turns=0).on_conflict_do_nothing()
        )

    @staticmethod
    def _count(conn: Any, backend: str, *, queued: bool) -> int:
        """Jobs of ``backend`` waiting in pman's queue (``queued``), or else the
        unfinished ones pman has given (or is giving) to the engine."""
        waiting = jobs.c.reason == QUEUE_REASON
        query = select(func.count()).where(
            and_(
                jobs.c.active,
                jobs.c.backend == backend,
                jobs.c.state.in_(UNFINISHED),
                waiting if queued else ~waiting,
            )
        )
        return int(conn.execute(query).scalar_one())

    @_db
    def claim_next(self, backend: str, max_running: int) -> JobRecord | None:
        """The oldest job waiting in pman's queue, taken out of it to be submitted
        now, if fewer than ``max_running`` jobs are on the engine; else None."""
        with self.engine.begin() as conn:
            self._take_turn(conn)
            if self._count(conn, backend, queued=False) >= max_running:
                return None
            job_id = conn.execute(
                select(jobs.c.id)
                .where(
                    and_(
                        jobs.c.active,
                        jobs.c.backend == backend,
                        jobs.c.state == JobState.QUEUED.value,
                        jobs.c.reason == QUEUE_REASON,
                    )
                )
                .order_by(jobs.c.id)
                .limit(1)
            ).scalar()
            if job_id is None:
                return None
            t = now()
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(reason="", message="submitting", updated_at=t)
            )
            conn.execute(
                insert(job_events).values(
                    job_id=job_id,
                    at=t,
                    state=JobState.QUEUED.value,
                    message="leaving pman's queue: submitting",
                )
            )
        return self.get(job_id)

    def _event(
        self,
        conn: Any,
        job_id: int,
        at: datetime,
        state: str,
        message: str,
        *,
        jid: str,
        exit_code: int | None,
        callback_url: str | None,
    ) -> None:
        """A transition and its webhook deliveries, in the caller's transaction."""
        event_id = conn.execute(
            insert(job_events).values(job_id=job_id, at=at, state=state, message=message)
        ).inserted_primary_key[0]
        targets = [("callback", callback_url), ("global", self.webhook_url)]
        rows = [
            {
                "event_id": event_id,
                "job_id": job_id,
                "target": target,
                "url": url,
                "payload": {
                    "jid": jid,
                    "state": state,
                    "message": message,
                    "exit_code": exit_code,
                    "at": at.isoformat(),
                },
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": at,
                "last_error": "",
                "created_at": at,
            }
            for target, url in targets
            if url
        ]
        if rows:
            conn.execute(insert(webhook_deliveries), rows)

    @_db
    def unclaim(self, job_id: int, why: str) -> None:
        """Put a claimed job back in the queue, in its place (the engine could not
        be reached: the job is not at fault)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value))
                .values(reason=QUEUE_REASON, message=f"queued by pman: {why}", updated_at=now())
            )

    @_db
    def dequeue(self, job_id: int) -> bool:
        """Delete a job that still waits in pman's queue (it never reached the
        engine); False if it has left the queue meanwhile."""
        with self.engine.begin() as conn:
            self._take_turn(conn)
            row = conn.execute(
                select(
                    jobs.c.reason, jobs.c.state, jobs.c.active, jobs.c.jid, jobs.c.callback_url
                ).where(jobs.c.id == job_id)
            ).first()
            if row is None or not (
                row.active and row.reason == QUEUE_REASON and row.state == JobState.QUEUED.value
            ):
                return False
            t = now()
            values = {
                "active": False,
                "deleted_at": t,
                "updated_at": t,
                "state": JobState.CANCELLED.value,
                "reason": "deleted",
                "message": "deleted while it waited in pman's queue",
                "finished_at": t,
            }
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            self._event(
                conn,
                job_id,
                t,
                JobState.CANCELLED.value,
                "deleted",
                jid=row.jid,
                exit_code=None,
                callback_url=row.callback_url,
            )
        return True

    @_db
    def refresh_queue_messages(self, backend: str, max_running: int) -> int:
        """Say again how many jobs are ahead of each waiting job; returns how many waited."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.message)
                .where(
                    and_(
                        jobs.c.active,
                        jobs.c.backend == backend,
                        jobs.c.state == JobState.QUEUED.value,
                        jobs.c.reason == QUEUE_REASON,
                    )
                )
                .order_by(jobs.c.id)
            ).all()
            for ahead, row in enumerate(rows):
                message = queue_message(ahead, max_running)
                if row.message != message:
                    conn.execute(
                        update(jobs)
                        .where(and_(jobs.c.id == row.id, jobs.c.reason == QUEUE_REASON))
                        .values(message=message)
                    )
        return len(rows)

    @_db
    def queued_spec(self, job_id: int) -> tuple[dict[str, Any], dict[str, str], str]:
        """What was recorded of a job's JobSpec to start it later: the spec's JSON
        (``_spec_json``), its labels and its fingerprint."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(jobs.c.spec, jobs.c.fingerprint).where(jobs.c.id == job_id)
            ).first()
            if row is None or row.spec is None:
                raise JobNotFound(f"no job record {job_id} with its request")
            return dict(row.spec), self._labels(conn, [job_id]).get(job_id, {}), row.fingerprint

    @_db
    def forget(self, job_id: int) -> None:
        """Drop the record of a job whose submission failed: it never existed."""
        with self.engine.begin() as conn:
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.job_id == job_id))
            conn.execute(delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(delete(job_labels).where(job_labels.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))

    @_db
    def withdraw(self, job_id: int, message: str) -> None:
        """Mark a job whose submission was given up (see WITHDRAW_REASON)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.active))
                .values(reason=WITHDRAW_REASON, message=message, updated_at=now())
            )

    @_db
    def record(self, job_id: int, info: JobInfo, logs: str | None = None) -> bool:
        """Store what the engine says of a job; an event when the state changes.

        Returns True if the state changed. A finished job's state is final:
        later reports cannot move it back; a job a user cancelled keeps its
        state and message too (the engine only reports the kill), and takes
        only its final logs.
        """
        for _ in range(_CAS_ATTEMPTS):
            done = self._record_once(job_id, info, logs)
            if done is not None:
                return done
        log.warning("job record %d kept changing; the engine's report was not stored", job_id)
        return False

    def _record_once(self, job_id: int, info: JobInfo, logs: str | None) -> bool | None:
        """One try of ``record``; None if the row changed between its read and its write.

        The write is conditional on the state read (compare and set): pysqlite
        runs the SELECT outside the write transaction, so without it a
        report read before a cancel could overwrite the cancel."""
        t = now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(jobs.c.state, jobs.c.message, jobs.c.reason, jobs.c.jid, jobs.c.callback_url)
                .where(jobs.c.id == job_id)
                .with_for_update()
            ).first()
            if row is None:
                return False
            unchanged = and_(
                jobs.c.id == job_id, jobs.c.state == row.state, jobs.c.reason == row.reason
            )
            old = JobState(row.state)
            if old is JobState.CANCELLED and row.reason == CANCELLED_REASON:
                if logs is not None:
                    conn.execute(update(jobs).where(jobs.c.id == job_id).values(logs=logs))
                return False
            if old.finished and info.state is not old:
                return False
            values: dict[str, Any] = {
                "state": info.state.value,
                "exit_code": info.exit_code,
                "reason": info.reason,
                "message": info.message,
                "updated_at": t,
            }
            if info.started_at is not None:
                values["started_at"] = info.started_at
            if info.native_id is not None:
                values["native_id"] = info.native_id
            if info.finished_at is not None or info.state.finished:
                values["finished_at"] = info.finished_at or t
            if logs is not None:
                values["logs"] = logs
            if conn.execute(update(jobs).where(unchanged).values(**values)).rowcount == 0:
                return None
            changed = old is not info.state
            if changed:
                self._event(
                    conn,
                    job_id,
                    t,
                    info.state.value,
                    info.message,
                    jid=row.jid,
                    exit_code=info.exit_code,
                    callback_url=row.callback_url,
                )
        return changed

    @_db
    def set_running_logs(self, job_id: int, logs: str) -> None:
        """The latest logs of a running job. A job that has finished meanwhile
        keeps its final logs."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value))
                .values(logs=logs)
            )

    @_db
    def mark_cancelled(self, job_id: int, asked_at: datetime, logs: str | None = None) -> bool:
        """A user cancelled the job at ``asked_at``: its state becomes CANCELLED
        ("cancelled") for good. A job that had finished before the cancel was
        asked for keeps its outcome; one recorded as finished since (the
        tracker saw the engine kill it, say) is cancelled all the same.
        Returns True if the record was changed."""
        for _ in range(_CAS_ATTEMPTS):
            done = self._mark_cancelled_once(job_id, asked_at, logs)
            if done is not None:
                return done
        raise RegistryUnavailable(f"job record {job_id} kept changing; the cancel was not stored")

    def _mark_cancelled_once(
        self, job_id: int, asked_at: datetime, logs: str | None
    ) -> bool | None:
        t = now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(
                    jobs.c.state,
                    jobs.c.reason,
                    jobs.c.updated_at,
                    jobs.c.finished_at,
                    jobs.c.jid,
                    jobs.c.callback_url,
                )
                .where(jobs.c.id == job_id)
                .with_for_update()
            ).first()
            if row is None:
                raise JobNotFound(f"no job record {job_id}")
            old = JobState(row.state)
            if old is JobState.CANCELLED and row.reason == CANCELLED_REASON:
                return False
            if old.finished and _utc(row.updated_at) < asked_at:  # type: ignore[operator]
                return False
            values: dict[str, Any] = {
                "state": JobState.CANCELLED.value,
                "reason": CANCELLED_REASON,
                "message": "cancelled",
                "updated_at": t,
                "finished_at": _utc(row.finished_at) if old.finished else t,
            }
            if logs is not None:
                values["logs"] = logs
            unchanged = and_(
                jobs.c.id == job_id,
                jobs.c.state == row.state,
                jobs.c.reason == row.reason,
                jobs.c.updated_at == row.updated_at,
            )
            if conn.execute(update(jobs).where(unchanged).values(**values)).rowcount == 0:
                return None  # changed since it was read (the tracker): read again
            self._event(
                conn,
                job_id,
                t,
                JobState.CANCELLED.value,
                "cancelled",
                jid=row.jid,
                exit_code=None,
                callback_url=row.callback_url,
            )
        return True

    @_db
    def mark_deleted(self, job_id: int) -> None:
        """The job was removed from the engine: keep its history, free its jid."""
        t = now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(jobs.c.state, jobs.c.jid, jobs.c.exit_code, jobs.c.callback_url).where(
                    jobs.c.id == job_id
                )
            ).first()
            if row is None:
                return
            values: dict[str, Any] = {"active": False, "deleted_at": t, "updated_at": t}
            if not JobState(row.state).finished:
                values.update(
                    state=JobState.CANCELLED.value,
                    reason="deleted",
                    message="deleted while it ran",
                    finished_at=t,
                )
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            self._event(
                conn,
                job_id,
                t,
                values.get("state", row.state),
                "deleted",
                jid=row.jid,
                exit_code=row.exit_code,
                callback_url=row.callback_url,
            )

    # ---------------------------------------------------------------- reads
    @_db
    def ping(self) -> None:
        """Raise RegistryUnavailable unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    @_db
    def get(self, job_id: int) -> JobRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_RECORD).where(jobs.c.id == job_id)).mappings().first()
            if row is None:
                raise JobNotFound(f"no job record {job_id}")
            return JobRecord.from_row(row, self._labels(conn, [job_id]).get(job_id))

    @_db
    def find_active(self, jid: str, with_labels: bool = True) -> JobRecord | None:
        """The current job of a jid; ``with_labels=False`` saves a query on the poll path
        (the record's labels are then empty)."""
        row = self._active_by_jid.first(self.engine, jid=jid)
        if row is None:
            return None
        if not with_labels:
            return JobRecord.from_row(row)
        with self.engine.connect() as conn:
            return JobRecord.from_row(row, self._labels(conn, [row["id"]]).get(row["id"]))

    @_db
    def latest(self, jid: str) -> JobRecord:
        """The newest record of a jid, deleted or not (for its history)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(*_RECORD).where(jobs.c.jid == jid).order_by(jobs.c.id.desc()))
                .mappings()
                .first()
            )
            if row is None:
                raise JobNotFound(f"no job named {jid!r}")
            return JobRecord.from_row(row, self._labels(conn, [row["id"]]).get(row["id"]))

    def active(self, jid: str, with_labels: bool = True) -> JobRecord:
        record = self.find_active(jid, with_labels)
        if record is None:
            raise JobNotFound(f"no job named {jid!r}")
        return record

    @_db
    def unfinished(self) -> list[JobRecord]:
        """Active jobs whose state may still change: what the tracker watches."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*_RECORD).where(and_(jobs.c.active, jobs.c.state.in_(UNFINISHED)))
            ).mappings()
            return [JobRecord.from_row(r) for r in rows]

    @_db
    def count_by_state(self) -> dict[tuple[str, str], int]:
        """(backend, state) -> number of jobs not deleted, in one query (for /metrics)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.backend, jobs.c.state, func.count())
                .where(jobs.c.active)
                .group_by(jobs.c.backend, jobs.c.state)
            )
            return {(r[0], r[1]): r[2] for r in rows}

    @_db
    def count_queued(self) -> int:
        """Jobs waiting in pman's own queue, every backend (for /metrics)."""
        with self.engine.connect() as conn:
            query = select(func.count()).where(
                and_(
                    jobs.c.active,
                    jobs.c.state == JobState.QUEUED.value,
                    jobs.c.reason == QUEUE_REASON,
                )
            )
            return int(conn.execute(query).scalar_one())

    @_db
    def active_jids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(jobs.c.jid).where(jobs.c.active)).scalars())

    @_db
    def events(self, job_id: int) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(job_events.c.at, job_events.c.state, job_events.c.message)
                .where(job_events.c.job_id == job_id)
                .order_by(job_events.c.id)
            )
            return [Event(_utc(r.at), JobState(r.state), r.message) for r in rows]  # type: ignore[arg-type]

    @_db
    def list(
        self,
        *,
        states: Sequence[JobState] | None = None,
        auid: str | None = None,
        labels: dict[str, str] | None = None,
        include_deleted: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Jobs newest first, filtered, one page at a time (keyset paging on id)."""
        query = select(*_RECORD)
        # a withdrawn submission is no job (WITHDRAW_REASON)
        conditions = [jobs.c.reason != WITHDRAW_REASON]
        if not include_deleted:
            conditions.append(jobs.c.active)
        if states:
            conditions.append(jobs.c.state.in_([s.value for s in states]))
        if auid is not None:
            conditions.append(jobs.c.auid == auid)
        for key, value in (labels or {}).items():
            pair = select(job_labels.c.job_id).where(
                and_(job_labels.c.key == key, job_labels.c.value == value)
            )
            conditions.append(jobs.c.id.in_(pair))
        if cursor is not None:
            conditions.append(jobs.c.id < decode_cursor(cursor))
        query = query.where(and_(*conditions))
        query = query.order_by(jobs.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
            more = len(rows) > limit
            rows = rows[:limit]
            labels_by_job = self._labels(conn, [r["id"] for r in rows])
        records = [JobRecord.from_row(r, labels_by_job.get(r["id"])) for r in rows]
        return Page(records, encode_cursor(records[-1].id) if more and records else None)

    # ---------------------------------------------------------------- webhook outbox
    @_db
    def pending_deliveries(self, limit: int = 500) -> list[Delivery]:
        """Undelivered deliveries, oldest first (due or not: the deliverer keeps
        each receiver's deliveries of a job in order)."""
        d = webhook_deliveries
        query = (
            select(d, jobs.c.message.label("job_message"), jobs.c.state.label("job_state"))
            .join(jobs, jobs.c.id == d.c.job_id)
            .where(d.c.state == "pending")
            .order_by(d.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            _delivery(
                r,
                submitting=r["job_message"] == "submitting"
                and r["job_state"] == JobState.QUEUED.value,
            )
            for r in rows
        ]

    @_db
    def delivery_attempted(
        self, delivery_id: int, *, outcome: str, error: str = "", retry_at: datetime | None = None
    ) -> None:
        """One attempt made: ``outcome`` is delivered, failed (given up) or pending
        (to be tried again at ``retry_at``)."""
        d = webhook_deliveries
        values: dict[str, Any] = {"state": outcome, "attempts": d.c.attempts + 1}
        values["last_error"] = error
        if outcome == "pending":
            values["next_attempt_at"] = retry_at or now()
        else:
            values["finished_at"] = now()
        with self.engine.begin() as conn:
            conn.execute(update(d).where(d.c.id == delivery_id).values(**values))

    @_db
    def deliveries(self, job_id: int) -> list[Delivery]:
        """A job's webhook deliveries, oldest first."""
        d = webhook_deliveries
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(d).where(d.c.job_id == job_id).order_by(d.c.id))
                .mappings()
                .all()
            )
        return [_delivery(r) for r in rows]

    @staticmethod
    def _labels(conn: Any, job_ids: Iterable[int]) -> dict[int, dict[str, str]]:
        ids = list(job_ids)
        out: dict[int, dict[str, str]] = {}
        if not ids:
            return out
        rows = conn.execute(
            select(job_labels.c.job_id, job_labels.c.key, job_labels.c.value).where(
                job_labels.c.job_id.in_(ids)
            )
        )
        for r in rows:
            out.setdefault(r.job_id, {})[r.key] = r.value
        return out


def queue_message(ahead: int, max_running: int) -> str:
    jobs_ahead = f"{ahead} job{'s' if ahead != 1 else ''} ahead"
    return f"queued by pman: {jobs_ahead}; at most {max_running} run at once (PMAN_MAX_RUNNING)"


def _delivery(row: Mapping[str, Any], submitting: bool = False) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        job_id=row["job_id"],
        target=row["target"],
        url=row["url"],
        payload=dict(row["payload"]),
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_at=_utc(row["next_attempt_at"]),  # type: ignore[arg-type]
        last_error=row["last_error"] or "",
        created_at=_utc(row["created_at"]),  # type: ignore[arg-type]
        finished_at=_utc(row["finished_at"]),
        submitting=submitting,
    )


def _spec_json(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "image": spec.image,
        "command": spec.command,
        "env": spec.env,
        "resources": vars(spec.resources),
        "mounts": {"input_dir": spec.mounts.input_dir, "output_dir": spec.mounts.output_dir},
        "plugin_type": spec.plugin_type,
        "auid": spec.auid,
        "uid": spec.uid,
        "gid": spec.gid,
    }
