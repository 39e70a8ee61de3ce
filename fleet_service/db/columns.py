"""Column helpers every table uses: times are integer milliseconds since the epoch (the wire format);
the API renders ISO 8601."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Column, Integer
from sqlmodel import Field

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_field(default=dict):
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


def ms_field(**kw):
    return Field(sa_type=BigInteger, **kw)
