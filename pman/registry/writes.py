"""Writes of job records: new records, and every change of one as
pman.lifecycle.transition decides it.

A change is a compare-and-set: the record is read, ``transition`` decides,
and the write happens only if the row is still what was read (its state,
phase, reason and updated_at); otherwise it is read again and decided again.
pysqlite runs a SELECT outside the write transaction that follows it, so
without this a report read before a cancel could overwrite the cancel.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pman.errors import JobExists, JobNotFound
from pman.lifecycle import (
    Decision,
    Deleted,
    EngineReport,
    Phase,
    Reason,
    Report,
    UserCancel,
    Withdrawn,
    transition,
)
from pman.models import JobInfo, JobSpec, JobState
from pman.registry.outbox import Outbox
from pman.registry.records import (
    DEFAULT_RESOURCE,
    JobRecord,
    RecordReads,
    RegistryUnavailable,
    current_of,
    db,
    now,
)
from pman.registry.schema import job_events, job_labels, jobs, webhook_deliveries

log = logging.getLogger(__name__)

#: tries of a compare-and-set write before giving up
CAS_ATTEMPTS = 10

#: what a change reads of a record: what transition() needs, and what its event does
_CURRENT = [
    jobs.c.state,
    jobs.c.phase,
    jobs.c.reason,
    jobs.c.message,
    jobs.c.exit_code,
    jobs.c.active,
    jobs.c.updated_at,
    jobs.c.finished_at,
    jobs.c.jid,
    jobs.c.callback_url,
]


def column_values(values: dict[str, Any]) -> dict[str, Any]:
    """Enum members as the strings the columns hold (drivers take no str subclasses)."""
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in values.items()}


class Contended(RegistryUnavailable):
    """A record kept changing under a compare-and-set write."""


class RecordWrites(RecordReads, Outbox):
    """New records and their changes, each one transaction."""

    def _insert_in(
        self, conn: Any, values: dict[str, Any], labels: dict[str, str], event: str
    ) -> int:
        """One new active job with its labels and its first event, in the caller's
        transaction."""
        t = now()
        row = {
            "active": True,
            "reason": Reason.NONE.value,
            "updated_at": t,
            **column_values(values),
        }
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

    def _apply_in(self, conn: Any, job_id: int, report: Report) -> Decision | None:
        """Decide what ``report`` does to the record and write it, in the caller's
        transaction; None if the row changed between its read and its write."""
        row = (
            conn.execute(select(*_CURRENT).where(jobs.c.id == job_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise JobNotFound(f"no job record {job_id}")
        decision = transition(current_of(row), report)
        if decision.ignored:
            return decision
        unchanged = and_(
            jobs.c.id == job_id,
            jobs.c.state == row["state"],
            jobs.c.phase == row["phase"],
            jobs.c.reason == row["reason"],
            jobs.c.updated_at == row["updated_at"],
        )
        values = column_values(dict(decision.values))
        if conn.execute(update(jobs).where(unchanged).values(**values)).rowcount == 0:
            return None
        if decision.event is not None:
            self._event(
                conn,
                job_id,
                report.at,
                decision.event.state.value,
                decision.event.message,
                jid=row["jid"],
                exit_code=decision.event.exit_code,
                callback_url=row["callback_url"],
                webhook=decision.event.webhook,
            )
        return decision

    @db
    def apply(self, job_id: int, report: Report) -> Decision:
        """What ``report`` does to the record, written (JobNotFound if there is
        none; Contended if it kept changing under the write)."""
        for _ in range(CAS_ATTEMPTS):
            with self.engine.begin() as conn:
                decision = self._apply_in(conn, job_id, report)
            if decision is not None:
                return decision
        raise Contended(f"job record {job_id} kept changing; {type(report).__name__} not stored")

    @db
    def adopt(
        self,
        info: JobInfo,
        backend: str,
        auid: str,
        labels: dict[str, str],
        logs: str | None = None,
        *,
        resource: str = DEFAULT_RESOURCE,
    ) -> JobRecord:
        """Record a job found on the engine that the registry did not know
        (with its final logs when it has finished, in the same transaction)."""
        values = {
            "jid": info.name,
            "backend": backend,
            "state": info.state,
            "phase": Phase.ON_ENGINE,
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
            "resource": resource,
        }
        try:
            with self.engine.begin() as conn:
                job_id = self._insert_in(
                    conn, values, labels, "adopted: found on the engine without a record"
                )
        except IntegrityError as e:
            raise JobExists(f"job {info.name!r} has a record already") from e
        return self.get(job_id)

    def record(self, job_id: int, info: JobInfo, logs: str | None = None) -> bool:
        """Store what the engine says of a job; an event when the state changes.

        Returns True if the state changed. A finished job's state is final:
        later reports cannot move it back; a job a user cancelled keeps its
        state and message too (the engine only reports the kill), and takes
        only its final logs.
        """
        return self.report(job_id, EngineReport(info=info, logs=logs))

    def report(self, job_id: int, report: Report) -> bool:
        """``apply`` for the tracker's reports, which the next cycle makes again:
        False (and a warning) if the record kept changing, False if it is gone;
        else whether the job's history moved."""
        try:
            return self.apply(job_id, report).changed
        except JobNotFound:
            return False
        except Contended:
            log.warning(
                "job record %d kept changing; %s was not stored", job_id, type(report).__name__
            )
            return False

    @db
    def set_running_logs(self, job_id: int, logs: str) -> None:
        """The latest logs of a running job. A job that has finished meanwhile
        keeps its final logs."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value))
                .values(logs=logs)
            )

    def mark_cancelled(self, job_id: int, asked_at: datetime, logs: str | None = None) -> bool:
        """A user cancelled the job at ``asked_at``: its state becomes CANCELLED
        ("cancelled") for good. A job that had finished before the cancel was
        asked for keeps its outcome; one recorded as finished since (the
        tracker saw the engine kill it, say) is cancelled all the same.
        Returns True if the job's history moved."""
        try:
            return self.apply(job_id, UserCancel(asked_at=asked_at, logs=logs)).changed
        except Contended as e:
            raise RegistryUnavailable(
                f"job record {job_id} kept changing; the cancel was not stored"
            ) from e

    def mark_deleted(self, job_id: int) -> None:
        """The job was removed from the engine: keep its history, free its jid."""
        try:
            self.apply(job_id, Deleted())
        except JobNotFound:
            return

    def withdraw(self, job_id: int, message: str) -> None:
        """Mark a job whose submission was given up (see Phase.WITHDRAWN)."""
        try:
            self.apply(job_id, Withdrawn(message=message))
        except JobNotFound:
            return

    @db
    def forget(self, job_id: int) -> None:
        """Drop the record of a job whose submission failed: it never existed."""
        with self.engine.begin() as conn:
            conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.job_id == job_id))
            conn.execute(delete(job_events).where(job_events.c.job_id == job_id))
            conn.execute(delete(job_labels).where(job_labels.c.job_id == job_id))
            conn.execute(delete(jobs).where(jobs.c.id == job_id))


def spec_json(spec: JobSpec) -> dict[str, Any]:
    """What the registry keeps of a request, to start a queued job later."""
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
