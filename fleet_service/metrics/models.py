"""The rollup tables: one row per unit and minute (`metric_1m`) or hour (`metric_1h`).

Each numeric field of a sample has five columns: `_min`, `_max`, `_sum` and `_n` (samples that carried the field;
`_sum / _n` is its average) and `_last`, the value of the sample with the greatest `ts` in the bucket (`last_ts`),
whatever order samples arrived in. `samples` counts every sample folded in. Rows are written only by
`metrics.rollups` (ingest) and read by `metrics.tiers` (the API); nobody needs ORM objects for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, Column, Float, Integer, PrimaryKeyConstraint, String, Table
from sqlmodel import SQLModel

# The numeric fields of a sample, with whether they are whole numbers (bytes) or not.
FIELDS: dict[str, bool] = {
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
PARTS = ("min", "max", "sum", "n", "last")


def _rollup_table(name: str) -> Table:
    # Eight-byte columns first, then the four-byte counts, then the unit's id: PostgreSQL pads each column to its
    # alignment, and this order wastes none (a tenth of the row in the order one would write them).
    columns: list[Column] = [
        Column("bucket", BigInteger, nullable=False),  # the bucket's start, ms since the epoch
        Column("last_ts", BigInteger, nullable=False),
    ]
    for field, whole in FIELDS.items():
        value_type = BigInteger if whole else Float
        columns += [
            Column(f"{field}_min", value_type, nullable=True),
            Column(f"{field}_max", value_type, nullable=True),
            Column(f"{field}_sum", Float, nullable=False),
            Column(f"{field}_last", value_type, nullable=True),
        ]
    columns.append(Column("samples", Integer, nullable=False))
    columns += [Column(f"{f}_n", Integer, nullable=False) for f in FIELDS]
    columns.append(Column("device_id", String(63), nullable=False))
    return Table(name, SQLModel.metadata, *columns, PrimaryKeyConstraint("device_id", "bucket", name=f"{name}_pkey"))


METRIC_1M = _rollup_table("metric_1m")
METRIC_1H = _rollup_table("metric_1h")


@dataclass(frozen=True)
class Tier:
    """A rollup table and the width of its buckets."""

    name: str  # as the API reports it
    table: Table
    width_ms: int


MINUTE = Tier("1m", METRIC_1M, 60_000)
HOUR = Tier("1h", METRIC_1H, 3_600_000)
ROLLUPS = (MINUTE, HOUR)
