"""Baseline: the registry's schema as pman 4.0.0 made it.

An empty database gets it here; a registry made by 4.0.0 or an earlier
release is stamped with this revision instead, once pman.registry.migrate has
added what an earlier release's lacks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from pman.registry.migrations.baseline_4_0_0 import gate, metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind)
    # the capacity queue's gate row (pman.registry.queue)
    op.bulk_insert(gate, [{"name": "queue", "turns": 0}])


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
