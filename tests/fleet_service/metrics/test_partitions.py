"""Retention by whole days on PostgreSQL (daily partitions dropped, the default partition for rows outside them),
by rows on SQLite; what lands outside the partitions is still served."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from fleet_service.db import partitions
from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import LogRecord, MetricSample
from fleet_service.devices.retention import DAY_MS, HOUR_MS, Keep, prune
from fleet_service.metrics.models import FIELDS, HOUR, MINUTE
from protocol.ids import now_ms
from tests.fleet_service.metrics.samples import brute_force
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for


def sample(ts: int, received_at: int, unit: str = "part-1", cpu: float = 1.0) -> dict:
    return {"device_id": unit, "ts": ts, "received_at": received_at, "cpu_percent": cpu, "services": {}, "extra": {}}


def rollup(bucket: int, unit: str = "part-1") -> dict:
    """The row one sample without values makes."""
    [(_, row)] = brute_force([{"device_id": unit, "ts": bucket, **dict.fromkeys(FIELDS)}], 60_000).items()
    return {"device_id": unit, "bucket": bucket, **row}


def where_rows_are(engine, table: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT tableoid::regclass::text AS part, COUNT(*) FROM {table} GROUP BY 1"))
        return {part: count for part, count in rows}


def day_names(engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(partitions.days(conn, table).values())


@pytest.fixture
def pg_engine(postgres_url):
    """PostgreSQL only: SQLite has no partitions."""
    engine = make_engine(postgres_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def prune_when_free(engine, keep: Keep, now: int) -> dict[str, int]:
    """A service's retention pass may still be running in its thread after the service stopped: wait for it."""
    return wait_for(lambda: prune(engine, keep, now=now), what="the partition maintenance lock")


def test_the_migration_partitions_history_by_day_with_days_ahead(pg_engine):
    today = partitions.day_start(now_ms())
    for table in ("metric_sample", "log_record", "metric_1m"):
        with pg_engine.connect() as conn:
            assert partitions.is_partitioned(conn, table)
            days = partitions.days(conn, table)
            default = conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": f"{table}_default"}).scalar()
        assert {today + i * DAY_MS for i in range(4)} <= set(days), table  # today and three days ahead
        assert default


def test_retention_drops_whole_days_and_keeps_the_rest(pg_engine):
    enroll(pg_engine, "part-1")
    now = now_ms()
    keep_long = Keep(raw_hours=10 * 24, log_days=10, minute_days=10)
    prune(pg_engine, keep_long, now=now)  # makes the days of the last ten
    old, recent = now - 5 * DAY_MS, now - HOUR_MS
    with pg_engine.begin() as conn:
        conn.execute(MetricSample.__table__.insert(), [sample(old, old), sample(recent, recent)])
        conn.execute(MINUTE.table.insert(), [rollup(old - old % 60_000), rollup(recent - recent % 60_000)])
        conn.execute(
            LogRecord.__table__.insert(),
            [
                {
                    "device_id": "part-1",
                    "rec_id": f"r{ts}",
                    "ts": ts,
                    "received_at": ts,
                    "level": "info",
                    "level_no": 20,
                    "source": "",
                    "msg": "x",
                }
                for ts in (old, recent)
            ],
        )
    old_day = partitions.partition_name("metric_sample", partitions.day_start(old))
    assert where_rows_are(pg_engine, "metric_sample").get(old_day) == 1
    before = day_names(pg_engine, "metric_sample")

    removed = prune(pg_engine, Keep(raw_hours=48, log_days=3, minute_days=3), now=now)

    after = day_names(pg_engine, "metric_sample")
    assert old_day in before and old_day not in after
    assert [d for d in before if d not in after] == [
        d for d in before if d < partitions.partition_name("metric_sample", partitions.day_start(now - 48 * HOUR_MS))
    ]  # every day wholly past 48 hours, only those
    assert removed["metrics_days_dropped"] >= 5 and removed["logs_days_dropped"] >= 5
    assert removed["metric_1m_days_dropped"] >= 5
    for table in ("metric_sample", "log_record", "metric_1m"):
        with pg_engine.connect() as conn:
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar() == 1, table  # the recent row


def test_rows_outside_the_partitions_land_in_the_default_one_and_are_served(pg_engine, tmp_path):
    enroll(pg_engine, "part-1")
    now = now_ms()
    behind = now - 60 * DAY_MS  # a unit whose clock is two months behind: no partition for that day
    with pg_engine.begin() as conn:
        conn.execute(MetricSample.__table__.insert(), [sample(behind, now, cpu=42.0), sample(now, now)])
    assert where_rows_are(pg_engine, "metric_sample") == {
        "metric_sample_default": 1,
        partitions.partition_name("metric_sample", partitions.day_start(now)): 1,
    }
    url = pg_engine.url.render_as_string(hide_password=False)
    with StackThread(settings_for(tmp_path, database_url=url)) as stack, stack.client() as api:
        body = api.get("/api/devices/part-1/metrics", params={"since": behind - 1000, "until": behind + 1000}).json()
    assert [(p["ts"], p["cpu_percent"]) for p in body["points"]] == [(behind, 42.0)]
    # Kept by its receive time while it is recent ...
    prune_when_free(pg_engine, Keep(raw_hours=48), now=now)
    assert where_rows_are(pg_engine, "metric_sample").get("metric_sample_default") == 1
    # ... and deleted with the rows received as long ago.
    assert prune_when_free(pg_engine, Keep(raw_hours=48), now=now + 3 * DAY_MS)["metrics"] == 1


def test_a_new_day_takes_over_the_rows_the_default_partition_held_for_it(pg_engine):
    enroll(pg_engine, "part-1")
    now = now_ms()
    ahead = partitions.day_start(now) + 6 * DAY_MS + 1000  # past the three days made ahead
    with pg_engine.begin() as conn:
        conn.execute(MetricSample.__table__.insert(), [sample(ahead, now)])
    assert where_rows_are(pg_engine, "metric_sample") == {"metric_sample_default": 1}
    prune(pg_engine, Keep(raw_hours=48, ahead_days=7), now=now)
    day = partitions.partition_name("metric_sample", partitions.day_start(ahead))
    assert where_rows_are(pg_engine, "metric_sample") == {day: 1}


def test_sqlite_retention_deletes_rows_of_every_tier(sqlite_engine):
    engine = sqlite_engine
    enroll(engine, "part-1")
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(MetricSample.__table__.insert(), [sample(now - 3 * DAY_MS, now - 3 * DAY_MS), sample(now, now)])
        conn.execute(MINUTE.table.insert(), [rollup(now - 31 * DAY_MS), rollup(now - 60_000)])
        conn.execute(HOUR.table.insert(), [rollup(now - 800 * DAY_MS), rollup(now - 3_600_000)])
    removed = prune(engine, Keep(raw_hours=48, minute_days=30, hour_days=730), batch=1, now=now)
    assert (removed["metrics"], removed["metric_1m"], removed["metric_1h"]) == (1, 1, 1)
    with engine.connect() as conn:
        for table in (MetricSample.__table__, MINUTE.table, HOUR.table):
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 1
