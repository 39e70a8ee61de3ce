"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import fleet_service.db.tables  # noqa: F401  (registers the tables)
from fleet_service.db.partitions import is_partition


def not_a_partition(name, type_, _parents) -> bool:
    return not (type_ == "table" and is_partition(name))


def test_migrations_match_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True, "include_name": not_a_partition}),
            SQLModel.metadata,
        )
    assert diff == []
