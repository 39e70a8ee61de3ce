"""Retention deletes logs and metric samples past their age and keeps the rest, on SQLite and PostgreSQL."""

from __future__ import annotations

from fleet_service.enrollment import enroll
from fleet_service.models import LogRecord, MetricSample
from fleet_service.retention import DAY_MS, prune
from protocol.ids import now_ms


def test_prune_removes_only_what_is_past_retention(engine):
    enroll(engine, "venue-1")
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(LogRecord.__table__.insert(), [
            {"device_id": "venue-1", "rec_id": f"r{i}", "ts": now - age * DAY_MS, "level": "info", "level_no": 20,
             "source": "", "msg": f"{age} days old"} for i, age in enumerate([40, 31, 29, 1, 0])])
        conn.execute(MetricSample.__table__.insert(), [
            {"device_id": "venue-1", "ts": now - age * DAY_MS, "services": {}, "extra": {}} for age in [20, 15, 13, 0]])

    assert prune(engine, log_days=30, metric_days=14, batch=1) == {"logs": 2, "metrics": 2}
    with engine.connect() as conn:
        msgs = sorted(r.msg for r in conn.execute(LogRecord.__table__.select()))
        ages = sorted((now - r.ts) // DAY_MS for r in conn.execute(MetricSample.__table__.select()))
    assert msgs == ["0 days old", "1 days old", "29 days old"] and ages == [0, 13]
    assert prune(engine, log_days=0, metric_days=0) == {"logs": 0, "metrics": 0}  # 0 keeps everything
