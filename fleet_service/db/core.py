"""The Core table behind a table model, for the bulk inserts and guarded updates that bypass the ORM."""

from __future__ import annotations

from sqlalchemy import Table
from sqlmodel import SQLModel


def table_of(model: type[SQLModel]) -> Table:
    """`model.__table__`, typed: SQLModel sets it on every `table=True` class but its stubs do not declare it."""
    return model.__table__  # type: ignore[attr-defined]  # set by the metaclass, not in the stubs
