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

#: a record's columns: all but the request (``spec``), which only the table keeps
_RECORD = [c for c in jobs.c if c.key != "spec"]
#: built once: the poll path runs it for every GET
_ACTIVE_BY_JID = select(*_RECORD).where(and_(jobs.c.jid == bindparam("jid"), jobs.c.active))

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
        # create_all makes indexes only with new tables: add ones a newer pman defines
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- writes
    @_db
    def create(self, spec: JobSpec, backend: str) -> JobRecord:
        """Record a job about to be submitted; JobExists if its jid has an active job."""
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
        }
        try:
            return self._insert(values, spec.labels, "submitted")
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
        t = now()
        row = {"active": True, "reason": "", "updated_at": t, **values}
        row["submitted_at"] = row.get("submitted_at") or t
        with self.engine.begin() as conn:
            job_id = conn.execute(insert(jobs).values(**row)).inserted_primary_key[0]
            if labels:
                conn.execute(
                    insert(job_labels),
                    [{"job_id": job_id, "key": k, "value": v} for k, v in labels.items()],
                )
            conn.execute(
                insert(job_events).values(job_id=job_id, at=t, state=row["state"], message=event)
            )
        return self.get(job_id)

    @_db
    def forget(self, job_id: int) -> None:
        """Drop the record of a job whose submission failed: it never existed."""
        with self.engine.begin() as conn:
            conn.execute(delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(delete(job_labels).where(job_labels.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))

    @_db
    def record(self, job_id: int, info: JobInfo, logs: str | None = None) -> bool:
        """Store what the engine says of a job; an event when the state changes.

        Returns True if the state changed. A finished job's state is final:
        later reports cannot move it back.
        """
        t = now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(jobs.c.state, jobs.c.message).where(jobs.c.id == job_id)
            ).first()
            if row is None:
                return False
            old = JobState(row.state)
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
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
            changed = old is not info.state
            if changed:
                conn.execute(
                    insert(job_events).values(
                        job_id=job_id, at=t, state=info.state.value, message=info.message
                    )
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
    def mark_deleted(self, job_id: int) -> None:
        """The job was removed from the engine: keep its history, free its jid."""
        t = now()
        with self.engine.begin() as conn:
            row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
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
            conn.execute(
                insert(job_events).values(
                    job_id=job_id,
                    at=t,
                    state=values.get("state", row.state),
                    message="deleted",
                )
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
        conditions = []
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
        if conditions:
            query = query.where(and_(*conditions))
        query = query.order_by(jobs.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
            more = len(rows) > limit
            rows = rows[:limit]
            labels_by_job = self._labels(conn, [r["id"] for r in rows])
        records = [JobRecord.from_row(r, labels_by_job.get(r["id"])) for r in rows]
        return Page(records, encode_cursor(records[-1].id) if more and records else None)

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
