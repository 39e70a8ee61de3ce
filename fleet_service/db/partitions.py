"""Daily partitions on PostgreSQL: the time-ordered history tables are partitioned by range of a millisecond column,
one partition per UTC day (`<table>_pYYYYMMDD`) and a `<table>_default` for rows outside them (a unit's clock far
behind, or a day whose partition is already gone). Retention drops whole days instead of deleting rows.

Partitions are created ahead (by the migration and by every retention pass) so ingest never writes into the
default partition in normal operation; creating a day that already has rows in the default partition moves them
into it first. One replica at a time does this (an advisory lock); each change is its own short transaction
that locks the parent table first, with a lock timeout, so ingest waits at most that long.
SQLite has no partitions: there retention deletes rows in batches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)
DAY_MS = 86_400_000
PARTITIONED = {"metric_sample": "ts", "log_record": "ts", "metric_1m": "bucket"}  # table -> partition key
MAINTENANCE_LOCK = 7_310_016  # pg advisory lock: one replica maintains partitions at a time
LOCK_TIMEOUT = "5s"
_NAME = re.compile(r"^(?P<table>" + "|".join(PARTITIONED) + r")_(?:p(?P<day>[0-9]{8})|default)$")


def is_partition(name: str) -> bool:
    """Whether a table name is one of the partitions made here (not a table the models describe)."""
    return _NAME.match(name) is not None


def day_start(ms: int) -> int:
    return ms - ms % DAY_MS


def partition_name(table: str, day_ms: int) -> str:
    return f"{table}_p{datetime.fromtimestamp(day_ms / 1000, UTC):%Y%m%d}"


def default_name(table: str) -> str:
    return f"{table}_default"


def supported(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def is_partitioned(conn: Connection, table: str) -> bool:
    return bool(
        conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t))"), {"t": table}
        ).scalar()
    )


def days(conn: Connection, table: str) -> dict[int, str]:
    """The table's daily partitions: start of the day (ms) -> partition name."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    ).scalars()
    found = {}
    for name in rows:
        match = _NAME.match(name)
        if match and match["day"]:
            day = datetime.strptime(match["day"], "%Y%m%d").replace(tzinfo=UTC)
            found[int(day.timestamp() * 1000)] = name
    return found


def create_day(conn: Connection, table: str, day_ms: int) -> bool:
    """Create the partition of one day, moving rows of that day out of the default partition; False if it exists.

    Call inside a transaction of its own (it locks the parent table until the commit)."""
    column = PARTITIONED[table]
    name, default = partition_name(table, day_ms), default_name(table)
    bounds = {"a": day_ms, "b": day_ms + DAY_MS}
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text(f"LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE"))
    if conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar():
        return False
    stray = conn.execute(
        text(f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {column} >= :a AND {column} < :b)"), bounds
    ).scalar()
    span = f"FROM ({day_ms}) TO ({day_ms + DAY_MS})"
    if not stray:
        conn.execute(text(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES {span}"))
        return True
    conn.execute(text(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"))
    conn.execute(
        text(
            f"WITH moved AS (DELETE FROM {default} WHERE {column} >= :a AND {column} < :b RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    conn.execute(text(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES {span}"))
    return True


def drop_day(conn: Connection, table: str, name: str) -> None:
    conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    conn.execute(text(f"LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE"))
    conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


@contextmanager
def maintenance_lock(engine: Engine) -> Iterator[bool]:
    """True for the one replica that got the lock (held until the block ends)."""
    with engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": MAINTENANCE_LOCK}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MAINTENANCE_LOCK})
                conn.commit()


def maintain(engine: Engine, table: str, now: int, keep_ms: int, ahead_days: int = 3) -> tuple[int, int]:
    """Create the days from the oldest one still kept to `ahead_days` after today, drop the days wholly older than
    `keep_ms` (0 keeps every day); returns (created, dropped). The caller holds `maintenance_lock`."""
    with engine.connect() as conn:
        existing = days(conn, table)
    first = day_start(now - keep_ms) if keep_ms > 0 else day_start(now)
    wanted = range(first, day_start(now) + (ahead_days + 1) * DAY_MS, DAY_MS)
    created = dropped = 0
    for day in wanted:
        if day in existing:
            continue
        with engine.begin() as conn:
            created += create_day(conn, table, day)
    if keep_ms > 0:
        for day, name in sorted(existing.items()):
            if day + DAY_MS <= now - keep_ms:
                with engine.begin() as conn:
                    drop_day(conn, table, name)
                dropped += 1
                log.info("retention dropped partition %s", name)
    return created, dropped
