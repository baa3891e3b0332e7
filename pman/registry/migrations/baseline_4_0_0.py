"""The registry's schema as pman 4.0.0 (commit 25ba7ec) made it, frozen.

Migration 0001 creates it in an empty database; a registry that 4.0.0 or an
earlier release made (its tables, and no version table) has what it lacks of
it added (``pman.registry.migrate``) and is stamped as 0001. Never change
this module: a change of the schema is a new revision in ``versions/``.
"""

from __future__ import annotations

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
)

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("jid", String(255), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("backend", String(32), nullable=False),
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
    Column("logs", Text),
    Column("callback_url", Text),
)
Index(
    "jobs_one_active_jid",
    jobs.c.jid,
    unique=True,
    sqlite_where=jobs.c.active,
    postgresql_where=jobs.c.active,
)
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

gate = Table(
    "pman_gate",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("turns", Integer, nullable=False, default=0),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, ForeignKey("job_events.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("target", String(16), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
)
Index("webhook_deliveries_due", webhook_deliveries.c.state, webhook_deliveries.c.id)
Index("webhook_deliveries_by_job", webhook_deliveries.c.job_id, webhook_deliveries.c.id)
