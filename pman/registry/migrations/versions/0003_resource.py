"""The jobs' compute resource (PMAN_RESOURCES): which of pman's resources a
job was given to. Existing records ran on the one resource pman had, the one
of the unprefixed variables, named ``default``.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a registry that lost its version table (stamped again as the baseline)
    # may have the column already: it is kept as it is
    inspector = sa.inspect(op.get_bind())
    if "resource" not in {c["name"] for c in inspector.get_columns("jobs")}:
        op.add_column(
            "jobs",
            sa.Column("resource", sa.String(63), nullable=False, server_default="default"),
        )
    if "jobs_by_resource" not in {i["name"] for i in inspector.get_indexes("jobs")}:
        op.create_index("jobs_by_resource", "jobs", ["resource", "id"])


def downgrade() -> None:
    op.drop_index("jobs_by_resource", table_name="jobs")
    op.drop_column("jobs", "resource")
