"""The webhook outbox: the deliveries each transition owes, written in the
transition's own transaction (so a crash cannot lose one), and what the
tracker's leader (pman.webhooks.Deliverer) reads and marks as it sends them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from pman.lifecycle import Phase
from pman.models import JobState
from pman.registry.records import RegistryBase, _utc, db, now
from pman.registry.schema import job_events, jobs, webhook_deliveries


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


class Outbox(RegistryBase):
    """Events of a job's history and the webhook deliveries they owe."""

    def configure_webhooks(self, global_url: str | None) -> None:
        """From now on every transition also queues a delivery to ``global_url``."""
        self.webhook_url = global_url

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
        webhook: bool = True,
    ) -> None:
        """A transition and its webhook deliveries, in the caller's transaction."""
        event_id = conn.execute(
            insert(job_events).values(job_id=job_id, at=at, state=state, message=message)
        ).inserted_primary_key[0]
        if not webhook:
            return
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

    @db
    def pending_deliveries(self, limit: int = 500) -> list[Delivery]:
        """Undelivered deliveries, oldest first (due or not: the deliverer keeps
        each receiver's deliveries of a job in order)."""
        d = webhook_deliveries
        query = (
            select(d, jobs.c.phase.label("job_phase"), jobs.c.state.label("job_state"))
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
                submitting=r["job_phase"] == Phase.ACCEPTED.value
                and r["job_state"] == JobState.QUEUED.value,
            )
            for r in rows
        ]

    @db
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

    @db
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
