"""The jobs' phase: where pman has got with each job (pman.lifecycle.Phase).

It replaces control state kept in client-visible columns: the reason
"pman_queue" (waiting in pman's queue), "pman_withdraw" (a withdrawn
submission), the message "submitting" (the submission under way) and the
state cancelled with reason "cancelled" (a user's cancel, final). Those
columns keep their values: clients see the same; only pman's decisions move
to the phase. Existing records get the phase their columns meant.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

jobs = sa.table(
    "jobs",
    sa.column("phase", sa.String),
    sa.column("active", sa.Boolean),
    sa.column("state", sa.String),
    sa.column("reason", sa.String),
    sa.column("message", sa.Text),
)


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("phase", sa.String(16), nullable=False, server_default="on_engine"),
    )
    active = jobs.c.active == sa.true()
    # in order: a later rule wins over an earlier one
    rules = [
        # recorded, submission under way (or pman stopped before it got there)
        (
            "accepted",
            sa.and_(active, jobs.c.state == "queued", jobs.c.message == "submitting"),
        ),
        ("accepted", jobs.c.reason == "never_submitted"),
        (
            "accepted",
            sa.and_(
                jobs.c.reason == "start_failed",
                jobs.c.message.like("could not start it from pman's queue:%"),
            ),
        ),
        ("queued", sa.and_(active, jobs.c.state == "queued", jobs.c.reason == "pman_queue")),
        ("withdrawn", sa.and_(active, jobs.c.reason == "pman_withdraw")),
        ("cancelled", sa.and_(jobs.c.state == "cancelled", jobs.c.reason == "cancelled")),
        ("deleted", jobs.c.active == sa.false()),
    ]
    for phase, condition in rules:
        op.execute(jobs.update().where(condition).values(phase=phase))


def downgrade() -> None:
    op.drop_column("jobs", "phase")
