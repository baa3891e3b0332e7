"""Job records as the registry gives them out, and every read of them.

A job's record outlives its DELETE, so history survives; ``active`` marks the
one current job of a jid, and a new POST after DELETE makes a new record.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Select, and_, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from pman.errors import BackendUnavailable, JobNotFound
from pman.lifecycle import Current, Phase, Reason
from pman.models import JobInfo, JobState
from pman.registry.schema import ACTIVE_BY_JID, RECORD, UNFINISHED, job_events, job_labels, jobs

P = ParamSpec("P")

#: the resource of records made before there were several (migration 0003),
#: and of a pman without PMAN_RESOURCES (pman.settings.DEFAULT_RESOURCE)
DEFAULT_RESOURCE = "default"
R = TypeVar("R")


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
    #: a member, or an unlisted Reason for a text pman has no member for
    #: (Reason.parse): clients see it as it is stored
    reason: Reason
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
    phase: Phase = Phase.ON_ENGINE
    #: the compute resource the job was given to (PMAN_RESOURCES)
    resource: str = DEFAULT_RESOURCE

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
            reason=Reason.parse(row["reason"]),
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
            phase=Phase(row["phase"]),
            resource=row.get("resource") or DEFAULT_RESOURCE,
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

    def current(self) -> Current:
        """The record as pman.lifecycle.transition sees it."""
        return current_of(self.__dict__)


def current_of(row: Mapping[str, Any]) -> Current:
    return Current(
        state=JobState(row["state"]),
        phase=Phase(row["phase"]),
        reason=Reason.parse(row["reason"]),
        message=row["message"] or "",
        exit_code=row["exit_code"],
        active=bool(row["active"]),
        updated_at=_utc(row["updated_at"]),  # type: ignore[arg-type]
        finished_at=_utc(row["finished_at"]),
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


class RegistryUnavailable(BackendUnavailable):
    """The job registry's database cannot be used."""


def db(method: Callable[P, R]) -> Callable[P, R]:
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


class DirectQuery:
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


def labels_of(conn: Any, job_ids: Iterable[int]) -> dict[int, dict[str, str]]:
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


class RegistryBase:
    """What every part of the registry shares: its engine."""

    engine: Engine
    #: PMAN_WEBHOOK_URL: every transition gets a delivery to it (configure_webhooks)
    webhook_url: str | None

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.webhook_url = None
        self._active_by_jid = DirectQuery(engine, ACTIVE_BY_JID)


class RecordReads(RegistryBase):
    """Reads of job records, their labels and their events; each one short query."""

    @db
    def ping(self) -> None:
        """Raise RegistryUnavailable unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    @db
    def get(self, job_id: int) -> JobRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(*RECORD).where(jobs.c.id == job_id)).mappings().first()
            if row is None:
                raise JobNotFound(f"no job record {job_id}")
            return JobRecord.from_row(row, labels_of(conn, [job_id]).get(job_id))

    @db
    def find_active(self, jid: str, with_labels: bool = True) -> JobRecord | None:
        """The current job of a jid; ``with_labels=False`` saves a query on the poll path
        (the record's labels are then empty)."""
        row = self._active_by_jid.first(self.engine, jid=jid)
        if row is None:
            return None
        if not with_labels:
            return JobRecord.from_row(row)
        with self.engine.connect() as conn:
            return JobRecord.from_row(row, labels_of(conn, [row["id"]]).get(row["id"]))

    @db
    def latest(self, jid: str) -> JobRecord:
        """The newest record of a jid, deleted or not (for its history)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(*RECORD).where(jobs.c.jid == jid).order_by(jobs.c.id.desc()))
                .mappings()
                .first()
            )
            if row is None:
                raise JobNotFound(f"no job named {jid!r}")
            return JobRecord.from_row(row, labels_of(conn, [row["id"]]).get(row["id"]))

    def active(self, jid: str, with_labels: bool = True) -> JobRecord:
        record = self.find_active(jid, with_labels)
        if record is None:
            raise JobNotFound(f"no job named {jid!r}")
        return record

    @db
    def unfinished(self) -> list[JobRecord]:
        """Active jobs whose state may still change: what the tracker watches."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*RECORD).where(and_(jobs.c.active, jobs.c.state.in_(UNFINISHED)))
            ).mappings()
            return [JobRecord.from_row(r) for r in rows]

    @db
    def count_by_state(self) -> dict[tuple[str, str], int]:
        """(backend, state) -> number of jobs not deleted, in one query (for /metrics)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.backend, jobs.c.state, func.count())
                .where(jobs.c.active)
                .group_by(jobs.c.backend, jobs.c.state)
            )
            return {(r[0], r[1]): r[2] for r in rows}

    @db
    def count_by_resource_and_backend(self) -> dict[tuple[str, str, str], int]:
        """(resource, backend, state) -> number of jobs not deleted, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.resource, jobs.c.backend, jobs.c.state, func.count())
                .where(jobs.c.active)
                .group_by(jobs.c.resource, jobs.c.backend, jobs.c.state)
            )
            return {(r[0], r[1], r[2]): r[3] for r in rows}

    @db
    def count_by_resource(self) -> dict[tuple[str, str], int]:
        """(resource, state) -> number of jobs not deleted, in one query (for /metrics)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.resource, jobs.c.state, func.count())
                .where(jobs.c.active)
                .group_by(jobs.c.resource, jobs.c.state)
            )
            return {(r[0], r[1]): r[2] for r in rows}

    @db
    def active_jids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(jobs.c.jid).where(jobs.c.active)).scalars())

    @db
    def events(self, job_id: int) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(job_events.c.at, job_events.c.state, job_events.c.message)
                .where(job_events.c.job_id == job_id)
                .order_by(job_events.c.id)
            )
            return [Event(_utc(r.at), JobState(r.state), r.message) for r in rows]  # type: ignore[arg-type]

    @db
    def list(
        self,
        *,
        states: Sequence[JobState] | None = None,
        auid: str | None = None,
        labels: dict[str, str] | None = None,
        include_deleted: bool = False,
        cursor: str | None = None,
        limit: int = 50,
        resources: Sequence[str] | None = None,
    ) -> Page:
        """Jobs newest first, filtered, one page at a time (keyset paging on id)."""
        query = select(*RECORD)
        # a withdrawn submission is no job
        conditions = [jobs.c.phase != Phase.WITHDRAWN.value]
        if not include_deleted:
            conditions.append(jobs.c.active)
        if states:
            conditions.append(jobs.c.state.in_([s.value for s in states]))
        if auid is not None:
            conditions.append(jobs.c.auid == auid)
        if resources is not None:
            conditions.append(jobs.c.resource.in_(list(resources)))
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
            labels_by_job = labels_of(conn, [r["id"] for r in rows])
        records = [JobRecord.from_row(r, labels_by_job.get(r["id"])) for r in rows]
        return Page(records, encode_cursor(records[-1].id) if more and records else None)
