"""Alembic environment: runs on the connection handed over by fleet_service.db.engine.migrate."""

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import fleet_service.db.tables  # noqa: F401  (registers the tables)
from fleet_service.db.partitions import is_partition

target_metadata = SQLModel.metadata
MIGRATION_LOCK = 7_310_001  # PostgreSQL advisory lock: one replica migrates at a time


def include_name(name, type_, _parent_names) -> bool:
    """The daily partitions of a partitioned table are not in the models: they are made by db/partitions.py."""
    return not (type_ == "table" and is_partition(name))


def run() -> None:
    connection = context.config.attributes["connection"]
    is_pg = connection.dialect.name == "postgresql"
    if is_pg:
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
