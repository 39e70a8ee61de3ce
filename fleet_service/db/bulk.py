"""Many rows in one statement: on PostgreSQL an INSERT whose rows come from one array parameter per column
(`unnest`), one round trip and one plan however many rows; a thousand rows as separate executions cost two to
three times more (benchmarks/ingest_throughput.py). On SQLite (in-process, no round trips) one execution per row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, any_, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

__all__ = ["execute_rows", "insert_rows", "one_of"]


def insert_rows(dialect: str, table: Table, names: list[str]) -> Any:
    """The dialect's INSERT of `names` (add ON CONFLICT and RETURNING to it); run it with execute_rows()."""
    if dialect != "postgresql":
        return sqlite.insert(table)
    arrays = [cast(bindparam(n, type_=ARRAY(table.c[n].type)), ARRAY(table.c[n].type)) for n in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    return postgresql.insert(table).from_select(names, select(*(rows.c[n] for n in names)))


def execute_rows(session: Session, stmt: Any, rows: list[dict[str, Any]]) -> Any:
    """Run an insert_rows() statement over `rows` (every row with the same keys, the statement's names)."""
    if session.get_bind().dialect.name != "postgresql":
        return session.execute(stmt, rows)
    return session.execute(stmt, {name: [row[name] for row in rows] for name in rows[0]})


def one_of(dialect: str, column: Any, name: str) -> ColumnElement[bool]:
    """`column` is one of the list bound as `name`: `= ANY(array)` on PostgreSQL (one parameter, and a statement
    that does not change with the list's length), an expanding IN elsewhere. Build it once (a cached statement):
    building and compiling a statement per call costs more CPU than the query itself."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))
