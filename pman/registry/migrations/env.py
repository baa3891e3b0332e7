"""Alembic's entry point for the registry's migrations.

pman runs them itself (``pman.registry.migrate``), on a connection it has
opened, locked and begun a transaction on: every revision applies in that
one transaction, so a start-up that fails part way leaves the schema as it
was. There is no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from pman.registry.migrate import VERSION_TABLE
from pman.registry.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "the registry's migrations run at pman's start-up (pman.registry.migrate.upgrade), "
        "on a connection it gives them"
    )
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
