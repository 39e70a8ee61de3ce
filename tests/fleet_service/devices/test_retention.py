"""Retention deletes logs and metric samples past their age and keeps the rest, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select, update

from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import Device, LogRecord, MetricSample
from fleet_service.devices.retention import DAY_MS, Keep, cap_logs, prune
from protocol.ids import now_ms
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.unit import RawUnit


def test_prune_removes_only_what_is_past_retention(engine):
    enroll(engine, "venue-1")
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(
            LogRecord.__table__.insert(),
            [
                {
                    "device_id": "venue-1",
                    "rec_id": f"r{i}",
                    "ts": now - age * DAY_MS,
                    "received_at": now - age * DAY_MS,
                    "level": "info",
                    "level_no": 20,
                    "source": "",
                    "msg": f"{age} days old",
                }
                for i, age in enumerate([40, 31, 29, 1, 0])
            ],
        )
        conn.execute(
            MetricSample.__table__.insert(),
            [
                {
                    "device_id": "venue-1",
                    "ts": now - age * DAY_MS,
                    "received_at": now - age * DAY_MS,
                    "services": {},
                    "extra": {},
                }
                for age in [20, 15, 13, 0]
            ],
        )

    removed = prune(engine, Keep(log_days=30, raw_hours=14 * 24), batch=1)
    assert (removed["logs"], removed["metrics"]) == (2, 2)
    with engine.connect() as conn:
        msgs = sorted(r.msg for r in conn.execute(LogRecord.__table__.select()))
        ages = sorted((now - r.ts) // DAY_MS for r in conn.execute(MetricSample.__table__.select()))
    assert msgs == ["0 days old", "1 days old", "29 days old"] and ages == [0, 13]
    removed = prune(engine, Keep(log_days=0, raw_hours=0))  # 0 keeps everything
    assert (removed["logs"], removed["metrics"]) == (0, 0)


def test_retention_runs_on_the_servers_time_not_the_units(engine):
    enroll(engine, "venue-2")
    now = now_ms()
    far_future = now + 3000 * 365 * DAY_MS  # a unit's clock in the year ~5000
    with engine.begin() as conn:
        conn.execute(
            LogRecord.__table__.insert(),
            [
                {
                    "device_id": "venue-2",
                    "rec_id": "old",
                    "ts": far_future,
                    "received_at": now - 40 * DAY_MS,
                    "level": "info",
                    "level_no": 20,
                    "source": "",
                    "msg": "received 40 days ago",
                },
                {
                    "device_id": "venue-2",
                    "rec_id": "new",
                    "ts": now - 60 * DAY_MS,
                    "received_at": now,
                    "level": "info",
                    "level_no": 20,
                    "source": "",
                    "msg": "received now",
                },
            ],
        )
    assert prune(engine, Keep(log_days=30))["logs"] == 1
    with engine.connect() as conn:
        assert [r.msg for r in conn.execute(LogRecord.__table__.select())] == ["received now"]


def test_no_unit_keeps_more_than_its_cap_of_log_rows(engine):
    enroll(engine, "big-1")
    enroll(engine, "small-1")
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(
            LogRecord.__table__.insert(),
            [
                {
                    "device_id": unit,
                    "rec_id": f"r{i}",
                    "ts": now + i,
                    "received_at": now,
                    "level": "info",
                    "level_no": 20,
                    "source": "",
                    "msg": f"{unit} n={i}",
                }
                for unit, count in (("big-1", 300), ("small-1", 50))
                for i in range(count)
            ],
        )
        conn.execute(update(Device).where(Device.id == "big-1").values(log_rows=300))
        conn.execute(update(Device).where(Device.id == "small-1").values(log_rows=50))
    assert cap_logs(engine, max_rows=100, batch=40) == 200
    with engine.connect() as conn:
        kept = sorted(
            int(r.msg.split("=")[1])
            for r in conn.execute(LogRecord.__table__.select().where(LogRecord.device_id == "big-1"))
        )
        small = conn.execute(
            select(func.count()).select_from(LogRecord).where(LogRecord.device_id == "small-1")
        ).scalar_one()
        rows = dict(conn.execute(select(Device.id, Device.log_rows)).all())
    assert kept == list(range(200, 300))  # the newest 100; the oldest went first
    assert small == 50 and rows == {"big-1": 100, "small-1": 50}
    assert cap_logs(engine, max_rows=100) == 0  # nothing over: nothing counted again, nothing deleted


def test_ingest_counts_each_units_log_rows_for_the_cap(fleet):
    secret = fleet.enroll("counted-1")
    unit = RawUnit(fleet.mqtt_port, "counted-1", secret).connect()
    unit.birth()
    for batch in range(3):
        unit.publish(
            Kind.LOGS, {"v": 1, "records": [{"id": f"{batch}-{i}", "ts": now_ms(), "msg": "x"} for i in range(10)]}
        )
    engine = fleet.stack.ctx.engine

    def counted() -> int:
        with engine.connect() as conn:
            return conn.execute(select(Device.log_rows).where(Device.id == "counted-1")).scalar_one()

    wait_for(lambda: counted() == 30, what="30 log rows counted")
    assert cap_logs(engine, max_rows=25) == 5 and counted() == 25
    unit.stop_clean()
