"""Metric tiers and daily partitions: one raw sample per unit and ts, per-minute and per-hour rollups filled from
the samples already stored; on PostgreSQL `metric_sample`, `log_record` and `metric_1m` become tables partitioned
by day (their rows copied over), and a log record is unique per unit, record id and ts

Revision ID: 0013
Revises: 0012
"""

import time
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
DAY_MS = 86_400_000
AHEAD_DAYS = 3
MOST_DAYS = 400  # days older than this (or older rows) go to the default partition, deleted by retention
FIELDS = {  # numeric sample fields: whole numbers?
    "cpu_percent": False,
    "mem_percent": False,
    "mem_used_bytes": True,
    "disk_percent": False,
    "disk_free_bytes": True,
    "load1": False,
    "temp_c": False,
    "net_rx_bytes": True,
    "net_tx_bytes": True,
}
SAMPLE_COLUMNS = ["device_id", "ts", "received_at", *FIELDS, "services", "extra"]
LOG_COLUMNS = ["id", "device_id", "rec_id", "ts", "received_at", "level", "level_no", "source", "msg"]


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _sample_columns() -> list[sa.Column]:
    """Eight-byte columns before the variable-length ones: PostgreSQL pads nothing in this order."""
    return [
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=True),
        *[sa.Column(f, sa.BigInteger() if whole else sa.Float(), nullable=True) for f, whole in FIELDS.items()],
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
    ]


def _rollup_columns() -> list[sa.Column]:
    """Eight-byte columns, then the four-byte counts, then the unit's id (no alignment padding)."""
    columns = [
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
    ]
    for f, whole in FIELDS.items():
        kind = sa.BigInteger if whole else sa.Float
        columns += [
            sa.Column(f"{f}_min", kind(), nullable=True),
            sa.Column(f"{f}_max", kind(), nullable=True),
            sa.Column(f"{f}_sum", sa.Float(), nullable=False),
            sa.Column(f"{f}_last", kind(), nullable=True),
        ]
    columns += [sa.Column("samples", sa.Integer(), nullable=False)]
    columns += [sa.Column(f"{f}_n", sa.Integer(), nullable=False) for f in FIELDS]
    columns.append(sa.Column("device_id", sa.String(length=63), nullable=False))
    return columns


def _day_name(table: str, day: int) -> str:
    return f"{table}_p{datetime.fromtimestamp(day / 1000, UTC):%Y%m%d}"


def _partitions(table: str, oldest: int | None) -> None:
    """A default partition and one per day from the day of `oldest` (at most MOST_DAYS back) to AHEAD_DAYS on."""
    now = int(time.time() * 1000)
    today = now - now % DAY_MS
    first = today if oldest is None else max(oldest - oldest % DAY_MS, today - MOST_DAYS * DAY_MS)
    first = min(first, today)
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    for day in range(first, today + (AHEAD_DAYS + 1) * DAY_MS, DAY_MS):
        op.execute(
            f"CREATE TABLE {_day_name(table, day)} PARTITION OF {table} FOR VALUES FROM ({day}) TO ({day + DAY_MS})"
        )


def _oldest(table: str, column: str) -> int | None:
    return op.get_bind().execute(sa.text(f"SELECT MIN({column}) FROM {table}")).scalar()


def _samples_upgrade() -> None:
    """One row per (device_id, ts): the first stored wins; the id column goes."""
    cols = ", ".join(SAMPLE_COLUMNS)
    op.execute("ALTER TABLE metric_sample RENAME TO metric_sample_before")
    if _pg():
        op.execute("ALTER TABLE metric_sample_before DROP CONSTRAINT metric_sample_pkey")
    op.drop_index("ix_metric_device_ts", table_name="metric_sample_before")
    op.drop_index("ix_metric_received", table_name="metric_sample_before")
    op.create_table(
        "metric_sample",
        *_sample_columns(),
        sa.PrimaryKeyConstraint("device_id", "ts", name="metric_sample_pkey"),
        postgresql_partition_by="RANGE (ts)",
    )
    if _pg():
        _partitions("metric_sample", _oldest("metric_sample_before", "ts"))
        op.execute(
            f"INSERT INTO metric_sample ({cols}) SELECT {cols} FROM metric_sample_before ORDER BY id "
            "ON CONFLICT DO NOTHING"
        )
    else:
        op.execute(f"INSERT OR IGNORE INTO metric_sample ({cols}) SELECT {cols} FROM metric_sample_before ORDER BY id")
    op.drop_table("metric_sample_before")
    op.create_index("ix_metric_received", "metric_sample", ["received_at"])


def _rollups_upgrade() -> None:
    for table, width, partitioned in (("metric_1m", 60_000, True), ("metric_1h", 3_600_000, False)):
        op.create_table(
            table,
            *_rollup_columns(),
            sa.PrimaryKeyConstraint("device_id", "bucket", name=f"{table}_pkey"),
            **({"postgresql_partition_by": "RANGE (bucket)"} if partitioned else {}),
        )
        if partitioned and _pg():
            oldest = _oldest("metric_sample", "ts")
            _partitions(table, None if oldest is None else oldest - oldest % width)
        _backfill(table, width)


def _backfill(table: str, width: int) -> None:
    """Each bucket from the stored samples; `_last` from the sample at the bucket's greatest ts (one per ts)."""
    aggregates = ", ".join(
        f"MIN({f}) AS {f}_min, MAX({f}) AS {f}_max, COALESCE(SUM({f}), 0) AS {f}_sum, COUNT({f}) AS {f}_n"
        for f in FIELDS
    )
    targets = ", ".join(f"{f}_min, {f}_max, {f}_sum, {f}_n, {f}_last" for f in FIELDS)
    values = ", ".join(f"a.{f}_min, a.{f}_max, a.{f}_sum, a.{f}_n, s.{f}" for f in FIELDS)
    op.execute(
        f"INSERT INTO {table} (device_id, bucket, samples, last_ts, {targets}) "
        f"SELECT a.device_id, a.bucket, a.samples, a.last_ts, {values} FROM ("
        f"SELECT device_id, (ts / {width}) * {width} AS bucket, COUNT(*) AS samples, MAX(ts) AS last_ts, {aggregates} "
        f"FROM metric_sample GROUP BY device_id, (ts / {width}) * {width}) a "
        "JOIN metric_sample s ON s.device_id = a.device_id AND s.ts = a.last_ts"
    )


def _logs_upgrade() -> None:
    if not _pg():
        with op.batch_alter_table("log_record") as batch:
            batch.drop_constraint("uq_log_device_rec", type_="unique")
            batch.create_unique_constraint("uq_log_device_rec_ts", ["device_id", "rec_id", "ts"])
        return
    # The id sequence outlives the old table; the new one takes it over, so ids keep growing from where they were.
    op.execute("ALTER SEQUENCE log_record_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE log_record RENAME TO log_record_before")
    op.execute("ALTER TABLE log_record_before ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER TABLE log_record_before DROP CONSTRAINT log_record_pkey")
    op.execute("ALTER TABLE log_record_before DROP CONSTRAINT uq_log_device_rec")
    op.drop_index("ix_log_device_ts", table_name="log_record_before")
    op.drop_index("ix_log_received", table_name="log_record_before")
    op.create_table(  # fixed-width columns first: no alignment padding
        "log_record",
        sa.Column("id", sa.BigInteger(), server_default=sa.text("nextval('log_record_id_seq')"), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=True),
        sa.Column("level_no", sa.Integer(), nullable=False),
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("rec_id", _S(length=64), nullable=False),
        sa.Column("level", _S(length=16), nullable=False),
        sa.Column("source", _S(length=128), nullable=False),
        sa.Column("msg", _S(), nullable=False),
        postgresql_partition_by="RANGE (ts)",
    )
    op.execute("ALTER SEQUENCE log_record_id_seq OWNED BY log_record.id")
    _partitions("log_record", _oldest("log_record_before", "ts"))
    cols = ", ".join(LOG_COLUMNS)
    op.execute(f"INSERT INTO log_record ({cols}) SELECT {cols} FROM log_record_before")
    op.drop_table("log_record_before")
    # A partitioned table's keys must hold its partition key (ts); built after the copy, which is faster.
    op.create_primary_key("log_record_pkey", "log_record", ["id", "ts"])
    op.create_unique_constraint("uq_log_device_rec_ts", "log_record", ["device_id", "rec_id", "ts"])
    op.create_index("ix_log_device_ts", "log_record", ["device_id", "ts"])
    op.create_index("ix_log_received", "log_record", ["received_at"])


def upgrade() -> None:
    _samples_upgrade()
    _rollups_upgrade()
    _logs_upgrade()


def downgrade() -> None:
    """Back to plain tables (rows copied, the rollups dropped); samples get new ids."""
    op.drop_table("metric_1h")
    op.drop_table("metric_1m")
    cols = ", ".join(SAMPLE_COLUMNS)
    op.execute("ALTER TABLE metric_sample RENAME TO metric_sample_tiered")
    if _pg():
        op.execute("ALTER TABLE metric_sample_tiered DROP CONSTRAINT metric_sample_pkey")
    op.drop_index("ix_metric_received", table_name="metric_sample_tiered")
    op.create_table(
        "metric_sample",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        *_sample_columns(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(f"INSERT INTO metric_sample ({cols}) SELECT {cols} FROM metric_sample_tiered ORDER BY ts")
    op.drop_table("metric_sample_tiered")
    op.create_index("ix_metric_device_ts", "metric_sample", ["device_id", "ts"])
    op.create_index("ix_metric_received", "metric_sample", ["received_at"])
    if not _pg():
        with op.batch_alter_table("log_record") as batch:
            batch.drop_constraint("uq_log_device_rec_ts", type_="unique")
            batch.create_unique_constraint("uq_log_device_rec", ["device_id", "rec_id"])
        return
    op.execute("ALTER SEQUENCE log_record_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE log_record RENAME TO log_record_tiered")
    op.execute("ALTER TABLE log_record_tiered ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER TABLE log_record_tiered DROP CONSTRAINT log_record_pkey")
    op.execute("ALTER TABLE log_record_tiered DROP CONSTRAINT uq_log_device_rec_ts")
    op.drop_index("ix_log_device_ts", table_name="log_record_tiered")
    op.drop_index("ix_log_received", table_name="log_record_tiered")
    op.create_table(
        "log_record",
        sa.Column("id", sa.BigInteger(), server_default=sa.text("nextval('log_record_id_seq')"), nullable=False),
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("rec_id", _S(length=64), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=True),
        sa.Column("level", _S(length=16), nullable=False),
        sa.Column("level_no", sa.Integer(), nullable=False),
        sa.Column("source", _S(length=128), nullable=False),
        sa.Column("msg", _S(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("ALTER SEQUENCE log_record_id_seq OWNED BY log_record.id")
    cols = ", ".join(LOG_COLUMNS)
    # Rows stored twice under different ts (possible only after the upgrade) keep their first copy.
    op.execute(
        f"INSERT INTO log_record ({cols}) SELECT DISTINCT ON (device_id, rec_id) {cols} FROM log_record_tiered "
        "ORDER BY device_id, rec_id, id"
    )
    op.drop_table("log_record_tiered")
    op.create_unique_constraint("uq_log_device_rec", "log_record", ["device_id", "rec_id"])
    op.create_index("ix_log_device_ts", "log_record", ["device_id", "ts"])
    op.create_index("ix_log_received", "log_record", ["received_at"])
