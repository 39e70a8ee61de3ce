"""A log record delivered again is stored once, also when its ts was replaced by the receive time (a unit whose
clock was far off): the unique key holds ts, which a second delivery would change (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from sqlalchemy import select

from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import LogRecord
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.persister import Inbound, Persister
from fleet_service.prometheus import Registry
from protocol.ids import now_ms
from protocol.topics import Kind, topic


def test_a_restamped_record_delivered_twice_is_stored_once(engine):
    enroll(engine, "clock-1")
    registry = Registry()
    persister = Persister(engine, registry, BadMessageLog(registry))
    batch = {
        "v": 1,
        "records": [
            {"id": "boot-1", "ts": 1_000, "msg": "before the clock was set"},  # 1970: restamped
            {"id": "ok-1", "ts": now_ms(), "msg": "on time"},
        ],
    }
    payload = json.dumps(batch).encode()
    first = now_ms()
    persister.persist([Inbound(topic("clock-1", Kind.LOGS), payload, first)])
    persister.persist([Inbound(topic("clock-1", Kind.LOGS), payload, first + 5_000)])  # the outbox sends it again
    with engine.connect() as conn:
        rows = conn.execute(select(LogRecord.rec_id, LogRecord.ts).order_by(LogRecord.rec_id)).all()
    assert [r.rec_id for r in rows] == ["boot-1", "ok-1"]
    assert rows[0].ts == first  # the first delivery's receive time
