"""Metric history at fleet size on PostgreSQL: bytes on disk per unit and day for the raw-only layout the service
had before and for the tiers (raw samples, per-minute and per-hour rollups), and how fast the unit page's charts
read them with 10,000 units' history in the database.

The rows are generated inside PostgreSQL (INSERT ... SELECT over generate_series, in time order as ingest would
write them), not sent through MQTT: this is about storage and queries. Seven days of raw samples for 10,000 units
at 10 s are 605 million rows, too many for a small machine, so the script generates what the tiers keep, for the
spans the charts read: the per-hour rollups for `--days` (default 7), the per-minute rollups for the last
`--minute-hours` (default 24), the raw samples for the last `--raw-hours` (default 1), each for every unit; and
7 days of per-minute rows for `--wide-units` of them (a week at 10-minute steps). The raw-only layout is the same
raw rows copied into a table shaped as before (an id, an index on (device_id, ts) and one on received_at).
Bytes per unit and day are each table's pg_total_relation_size (all partitions) / units / days it holds.

Chart timings are GET /api/devices/{id}/metrics through a running service (real HTTP), for random units, at the
dashboard's ranges and steps.

    python benchmarks/metric_storage.py [--units 10000] [--days 7] [--minute-hours 24] [--raw-hours 1]
                                        [--wide-units 200] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from benchmarks.bench_support import database, insert_units, percentile  # noqa: E402
from fleet_service.db.engine import make_engine  # noqa: E402
from fleet_service.devices.retention import Keep, prune  # noqa: E402
from fleet_service.metrics.models import FIELDS  # noqa: E402
from protocol.ids import now_ms  # noqa: E402
from tests.support.stack import StackThread, settings_for  # noqa: E402

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
SERVICES = '{"recorder.service": "active", "uploader.service": "active"}'
WHOLE = {"mem_used_bytes", "disk_free_bytes", "net_rx_bytes", "net_tx_bytes"}


def value(field: str) -> str:
    """A plausible random value of a field, as SQL."""
    if field in WHOLE:
        return "(random() * 1e10)::bigint"
    return "(random() * 100)::float8"


def raw_select(units: int, start: int, end: int) -> str:
    ids = "'unit-' || lpad(u::text, 5, '0')"
    fields = ", ".join(value(f) for f in FIELDS)
    return (
        f"SELECT {ids}, t + u % 10000, t + u % 10000 + 150, {fields}, '{SERVICES}'::json, '{{}}'::json "
        f"FROM generate_series({start}, {end - 1}, 10000) t CROSS JOIN generate_series(0, {units - 1}) u"
    )


def rollup_insert(table: str, width: int, units: int, start: int, end: int) -> str:
    per_bucket = width // 10_000
    parts = []
    for f in FIELDS:
        v = value(f)
        parts += [v, v, f"{v} * {per_bucket}", str(per_bucket), v]
    columns = ", ".join(f"{f}_min, {f}_max, {f}_sum, {f}_n, {f}_last" for f in FIELDS)
    return (
        f"INSERT INTO {table} (device_id, bucket, samples, last_ts, {columns}) "
        f"SELECT 'unit-' || lpad(u::text, 5, '0'), b, {per_bucket}, b + {width - 5000}, {', '.join(parts)} "
        f"FROM generate_series({start}, {end - 1}, {width}) b CROSS JOIN generate_series(0, {units - 1}) u"
    )


def total_bytes(conn, table: str) -> int:
    """The table, its indexes and TOAST, summed over its partitions when it has any."""
    return conn.execute(
        text(
            "SELECT pg_total_relation_size(to_regclass(:t)) + COALESCE((SELECT SUM(pg_total_relation_size(inhrelid)) "
            "FROM pg_inherits WHERE inhparent = to_regclass(:t)), 0)"
        ),
        {"t": table},
    ).scalar_one()


def timed(label: str, work) -> None:
    started = time.perf_counter()
    work()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=7, help="days of per-hour rollups for every unit")
    parser.add_argument("--minute-hours", type=int, default=24, help="hours of per-minute rollups for every unit")
    parser.add_argument("--raw-hours", type=int, default=1, help="hours of raw samples for every unit")
    parser.add_argument("--wide-units", type=int, default=200, help="units with 7 days of per-minute rollups")
    parser.add_argument("--queries", type=int, default=200, help="chart requests per range")
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.units} units", flush=True)
    with tempfile.TemporaryDirectory() as tmp, database("postgres", Path(tmp)) as url:
        engine = make_engine(url)
        now = now_ms()
        hour = now - now % HOUR_MS
        ids = [f"unit-{i:05d}" for i in range(args.units)]
        print("generating", flush=True)
        timed("units", lambda: insert_units(url, ids))
        keep = Keep(raw_hours=48, minute_days=30, hour_days=730)
        timed("partitions for the days kept", lambda: prune(engine, keep, now=now))
        raw_start, raw_end = hour - args.raw_hours * HOUR_MS, hour
        minute_start = hour - args.minute_hours * HOUR_MS
        hour_start = hour - args.days * DAY_MS
        columns = ", ".join(["device_id", "ts", "received_at", *FIELDS, "services", "extra"])
        with engine.begin() as conn:
            timed(
                f"raw samples, {args.raw_hours} h",
                lambda: conn.execute(
                    text(f"INSERT INTO metric_sample ({columns}) {raw_select(args.units, raw_start, raw_end)}")
                ),
            )
        with engine.begin() as conn:
            timed(
                f"per-minute rollups, {args.minute_hours} h",
                lambda: conn.execute(text(rollup_insert("metric_1m", 60_000, args.units, minute_start, hour))),
            )
        with engine.begin() as conn:
            timed(
                f"per-hour rollups, {args.days} d",
                lambda: conn.execute(text(rollup_insert("metric_1h", HOUR_MS, args.units, hour_start, hour))),
            )
        if args.wide_units:
            with engine.begin() as conn:
                timed(
                    f"per-minute rollups, 7 d before those, {args.wide_units} units",
                    lambda: conn.execute(
                        text(rollup_insert("metric_1m", 60_000, args.wide_units, hour - 7 * DAY_MS, minute_start))
                    ),
                )
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE metric_sample_flat (id BIGSERIAL PRIMARY KEY, device_id VARCHAR(63) NOT NULL, "
                    "ts BIGINT NOT NULL, received_at BIGINT, "
                    + ", ".join(f"{f} {'BIGINT' if f in WHOLE else 'FLOAT'}" for f in FIELDS)
                    + ", services JSON NOT NULL, extra JSON NOT NULL)"
                )
            )
            conn.execute(text("CREATE INDEX ix_flat_device_ts ON metric_sample_flat (device_id, ts)"))
            conn.execute(text("CREATE INDEX ix_flat_received ON metric_sample_flat (received_at)"))
            timed(
                "the same raw samples in the layout before the tiers",
                lambda: conn.execute(
                    text(f"INSERT INTO metric_sample_flat ({columns}) SELECT {columns} FROM metric_sample ORDER BY ts")
                ),
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            timed("VACUUM ANALYZE", lambda: conn.execute(text("VACUUM ANALYZE")))
            tables = ("metric_sample_flat", "metric_sample", "metric_1m", "metric_1h")
            sizes = {t: int(total_bytes(conn, t)) for t in tables}
            wide = conn.execute(
                text("SELECT COUNT(*) FROM metric_1m WHERE bucket < :s"), {"s": minute_start}
            ).scalar_one()
        # bytes per unit per day of history each table holds
        minute_rows_per_unit_day = 1440
        minute_rows = args.units * args.minute_hours * 60 + wide
        per_day = {
            "metric_sample_flat": sizes["metric_sample_flat"] / args.units / (args.raw_hours / 24),
            "metric_sample": sizes["metric_sample"] / args.units / (args.raw_hours / 24),
            "metric_1m": sizes["metric_1m"] / minute_rows * minute_rows_per_unit_day,
            "metric_1h": sizes["metric_1h"] / args.units / args.days,
        }
        print("\nbytes on disk per unit and day of history (table + indexes, all partitions)")
        for table, b in per_day.items():
            print(f"  {table:20s} {b / 1024:9.1f} KiB")
        before = per_day["metric_sample_flat"] * 14
        tiered = per_day["metric_sample"] * 2 + per_day["metric_1m"] * 30 + per_day["metric_1h"] * 730
        ingest_before = per_day["metric_sample_flat"]
        ingest_after = per_day["metric_sample"] + per_day["metric_1m"] + per_day["metric_1h"]
        print(f"written per unit and day: before {ingest_before / 2**20:.2f} MiB, tiers {ingest_after / 2**20:.2f} MiB")
        print(
            f"held per unit at the default retention: before (14 d raw) {before / 2**20:.1f} MiB; "
            f"tiers (48 h raw + 30 d of minutes + 2 years of hours) {tiered / 2**20:.1f} MiB"
        )
        fleet = args.units / 2**30
        print(f"at {args.units} units: before {before * fleet:.0f} GiB, tiers {tiered * fleet:.0f} GiB")
        engine.dispose()

        charts = [  # label, span, step, units to pick from
            ("15 min, 10 s steps (raw)", 15 * 60_000, 10, args.units),
            ("1 h, 30 s steps (raw)", HOUR_MS, 30, args.units),
            ("24 h, 10 min steps (1-minute rollups)", DAY_MS, 600, args.units),
            ("7 d, 1 h steps (hourly rollups)", 7 * DAY_MS, 3600, args.units),
        ]
        if args.wide_units:
            charts.append(("7 d, 10 min steps (1-minute rollups)", 7 * DAY_MS, 600, args.wide_units))
        rng = random.Random(1)
        print(f"\nchart requests, {args.queries} each, random units (through the service's HTTP API)")
        with StackThread(settings_for(Path(tmp), database_url=url)) as stack, stack.client() as api:
            for label, span, step, among in charts:
                times, points, tiers = [], 0, set()
                until = hour
                for _ in range(args.queries):
                    unit = f"unit-{rng.randrange(among):05d}"
                    params = {"since": until - span, "until": until, "step": step, "limit": 2000}
                    started = time.perf_counter()
                    r = api.get(f"/api/devices/{unit}/metrics", params=params)
                    times.append((time.perf_counter() - started) * 1000)
                    body = r.json()
                    points += len(body["points"])
                    tiers.add(body["tier"])
                print(
                    f"  {label:40s} p50 {percentile(times, 50):6.1f} ms  p95 {percentile(times, 95):6.1f} ms  "
                    f"({points / args.queries:.0f} points, tier {'/'.join(sorted(tiers))})",
                    flush=True,
                )
    print(f"\ntook {time.perf_counter() - began:.0f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
