"""The registry's tables, as the newest migration leaves them, and its engine.

SQLAlchemy 2 Core over SQLite (default, a file under PMAN_DATA_DIR) or
PostgreSQL (PMAN_DATABASE_URL), with the same code. The schema is made and
changed by the migrations in ``pman/registry/migrations`` (Alembic, applied at
start-up by ``pman.registry.migrate``); these definitions are what the code
reads and writes, and a test checks that they match the migrations' result.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine

from pman.lifecycle import Phase
from pman.models import JobState

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
    #: pman.models.JobState: what clients see
    Column("state", String(16), nullable=False),
    Column("exit_code", Integer),
    #: pman.lifecycle.Reason: why the job is in its state, as clients see it
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
    #: where the job's transitions are POSTed (the request's callback_url)
    Column("callback_url", Text),
    #: pman.lifecycle.Phase: where pman has got with the job (migration 0002)
    Column("phase", String(16), nullable=False, server_default=Phase.ON_ENGINE.value),
    #: the compute resource the job was given to (PMAN_RESOURCES; migration 0003)
    Column("resource", String(63), nullable=False, server_default="default"),
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
Index("jobs_by_resource", jobs.c.resource, jobs.c.id)

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
RECORD = [c for c in jobs.c if c.key != "spec"]
#: built once: the poll path runs it for every GET
ACTIVE_BY_JID = select(*RECORD).where(and_(jobs.c.jid == bindparam("jid"), jobs.c.active))

UNFINISHED = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.UNKNOWN.value)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL: readers (every HTTP worker answering polls) never wait for the
    # tracker's writes; foreign keys for the cascades.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if "poolclass" not in kwargs:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    return create_engine(url, **kwargs)
