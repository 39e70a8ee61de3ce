"""The evaluator on a migrated database (SQLite and PostgreSQL): the lease, and writes only on change."""

from __future__ import annotations

import time

from sqlmodel import Session, select

from fleet_service.alerts.evaluator import _plan, evaluate
from fleet_service.alerts.models import Alert, AlertCondition, AlertRule
from fleet_service.alerts.sources import Heard, Looks
from fleet_service.devices.models import Device, LogRecord
from protocol.ids import now_ms


def _hot_unit(engine, temp: float) -> None:
    with Session(engine) as s:
        now = now_ms()
        device = s.get(Device, "hot-1") or Device(id="hot-1", secret_hash="x", created_at=now)
        device.online, device.last_seen, device.last_metrics = True, now, {"temp_c": temp}
        s.add(device)
        s.commit()


def test_one_holder_at_a_time_and_a_lapsed_lease_passes_on(engine):
    assert evaluate(engine, "replica-a", lease_ms=400) == []
    assert evaluate(engine, "replica-b", lease_ms=400) is None  # held by a
    assert evaluate(engine, "replica-a", lease_ms=400) == []  # a renews
    time.sleep(0.5)
    assert evaluate(engine, "replica-b", lease_ms=400) == []  # a went quiet: b takes over
    assert evaluate(engine, "replica-a", lease_ms=400) is None


def test_a_condition_is_written_only_when_it_changes(engine):
    with Session(engine) as s:
        rule = s.exec(select(AlertRule).where(AlertRule.builtin == "temperature")).one()
        rule.for_s = 0.3
        s.add(rule)
        s.commit()
    _hot_unit(engine, 90.0)
    assert evaluate(engine, "a", 5000) == []
    with Session(engine) as s:
        pending = s.exec(select(AlertCondition)).one()
        assert pending.pending_since is not None and not pending.firing
        assert _plan(s, now_ms(), None) == []  # still pending, nothing to write
    time.sleep(0.35)
    fired = evaluate(engine, "a", 5000)
    assert fired is not None and [a["state"] for a in fired] == ["firing"] and fired[0]["value"] == 90.0
    with Session(engine) as s:
        assert _plan(s, now_ms(), None) == []
        assert s.exec(select(AlertCondition)).one().firing
    _hot_unit(engine, 82.0)  # between the clear line (80) and the threshold: still firing, nothing written
    with Session(engine) as s:
        assert _plan(s, now_ms(), None) == []
    _hot_unit(engine, 70.0)
    resolved = evaluate(engine, "a", 5000)
    assert resolved is not None and [a["state"] for a in resolved] == ["resolved"]
    with Session(engine) as s:
        assert s.exec(select(AlertCondition)).all() == []  # idle again: no row
        assert len(s.exec(select(Alert)).all()) == 1


def test_lines_whose_live_events_were_lost_are_counted_at_the_next_full_evaluation(engine):
    """The live bus announced nothing (a relay batch lost): a full evaluation finds the unit by the lines stored since
    its previous look, and a woken evaluation that heard nothing leaves it alone."""
    with Session(engine) as s:
        for rule in s.exec(select(AlertRule)).all():
            rule.enabled = False
            s.add(rule)
        now = now_ms()
        s.add(
            AlertRule(
                id="errs",
                name="errors",
                kind="log",
                level="error",
                pattern="",
                threshold=1,
                window_s=60,
                created_at=now,
                updated_at=now,
            )
        )
        s.commit()
    _hot_unit(engine, 50.0)
    looks = Looks()
    assert evaluate(engine, "a", 5000, None, Heard(looks=looks)) == []  # the first look: nothing logged yet
    with Session(engine) as s:
        for n in range(2):
            now = now_ms()
            s.add(
                LogRecord(
                    device_id="hot-1",
                    rec_id=f"r{n}",
                    ts=now,
                    received_at=now,
                    level="error",
                    level_no=40,
                    msg="encoder stalled",
                )
            )
        s.commit()
    assert evaluate(engine, "a", 5000, {"hot-1"}, Heard(looks=looks)) == []  # woken, but told of no lines
    fired = evaluate(engine, "a", 5000, None, Heard(looks=looks))
    assert fired is not None and [a["value"]["count"] for a in fired] == [2]
