"""Migrations on a database that already holds units: 0004 fills `device.failing` from the stored metrics, 0007
indexes their tags, 0013 turns stored samples into tiers and partitions history on PostgreSQL."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, text
from sqlmodel import Session, select

from fleet_service.db import partitions
from fleet_service.db.engine import MIGRATIONS, make_engine
from fleet_service.devices.models import UnitTag
from fleet_service.devices.tags import units_with_tag
from fleet_service.metrics.models import FIELDS, HOUR, MINUTE
from protocol.ids import now_ms
from tests.fleet_service.metrics.samples import brute_force, mismatches, random_samples, stored
from tests.support.services import FreshDatabase, postgres_available, require

UNITS = {  # id -> (online, last_metrics as stored JSON text)
    "ok": (True, '{"ts": 1, "services": {"recorder.service": "active"}, "extra": {}}'),
    "svc": (True, '{"ts": 1, "cpu_percent": 3.5, "services": {"recorder.service": "failed"}, "extra": {}}'),
    "extra": (True, '{"ts": 1, "services": {}, "extra": {"recorder": {"state": "failed"}}}'),
    "away": (False, '{"ts": 1, "services": {"a.service": "failed"}, "extra": {}}'),
    "none": (True, "{}"),
}


@contextlib.contextmanager
def database_url(kind: str, tmp_path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
        return
    reason = postgres_available()
    require(reason is None, reason or "")
    with FreshDatabase() as url:
        yield url


def upgrade(engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0004_marks_units_whose_stored_metrics_report_a_failure(kind, tmp_path):
    with database_url(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0003")
            with engine.begin() as conn:
                for device_id, (online, metrics) in UNITS.items():
                    conn.execute(
                        text(
                            "INSERT INTO device (id, name, tags, secret_hash, created_at, online, agent_version, "
                            "software_version, boot_id, hostname, ips, last_metrics, logs_dropped, desired_config, "
                            "desired_version, reported_config, reported_version) VALUES (:id, '', '[]', 'x', 1, "
                            ":online, '', '', '', '', '[]', :metrics, 0, '{}', 0, '{}', 0)"
                        ),
                        {"id": device_id, "online": online, "metrics": metrics},
                    )
            upgrade(engine, "head")
            with engine.connect() as conn:
                failing = {r.id for r in conn.execute(text("SELECT id FROM device WHERE failing"))}
                counted = conn.execute(text("SELECT count(*) FROM device WHERE online AND failing")).scalar_one()
            assert failing == {"svc", "extra", "away"}
            assert counted == 2  # the offline unit keeps its flag but is not counted
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0007_indexes_the_tags_of_units_enrolled_before(kind, tmp_path):
    tagged = {
        "under": '["site_1"]',
        "letter": '["siteA1"]',
        "both": '["other", "site_1", "site_1"]',
        "none": "[]",
        "odd": '["site_1", "has space", 7]',
    }  # as `fleet device add --tag` may have stored
    with database_url(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0006")
            with engine.begin() as conn:
                for device_id, tags in tagged.items():
                    conn.execute(
                        text(
                            "INSERT INTO device (id, name, tags, secret_hash, created_at, online, agent_version, "
                            "software_version, boot_id, hostname, ips, last_metrics, logs_dropped, desired_config, "
                            "desired_version, reported_config, reported_version, failing, ingest_throttled, log_rows) "
                            "VALUES (:id, '', :tags, 'x', 1, false, '', '', '', '', '[]', '{}', 0, '{}', 0, '{}', 0, "
                            "false, 0, 0)"
                        ),
                        {"id": device_id, "tags": tags},
                    )
            upgrade(engine, "head")
            with Session(engine) as s:
                assert s.exec(units_with_tag("site_1")).all() == ["both", "odd", "under"]
                assert s.exec(units_with_tag("siteA1")).all() == ["letter"]
                assert s.exec(units_with_tag("other")).all() == ["both"]
                assert s.exec(select(func.count()).select_from(UnitTag)).one() == 5
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0010_starts_notifications_after_the_alert_history_already_stored(kind, tmp_path):
    """Alerts that fired before notifications existed are not sent when the service first runs with them."""
    with database_url(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0008")
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO alert (rule_id, rule_name, kind, severity, device_id, state, fired_at, silenced) "
                        "VALUES ('r', 'old', 'offline', 'critical', 'u1', 'firing', 1, false)"
                    )
                )
                alert_id = conn.execute(text("SELECT id FROM alert")).scalar_one()
                for ts in (1, 2, 3):
                    conn.execute(
                        text(
                            "INSERT INTO alert_event (alert_id, ts, type, actor, silenced) "
                            "VALUES (:a, :ts, 'fired', '', false)"
                        ),
                        {"a": alert_id, "ts": ts},
                    )
                last = conn.execute(text("SELECT MAX(id) FROM alert_event")).scalar_one()
            upgrade(engine, "head")
            with engine.connect() as conn:
                cursor = conn.execute(text("SELECT name, holder, expires_at, last_event_id FROM notification_cursor"))
                assert [tuple(r) for r in cursor] == [("dispatcher", "", 0, last)]
                for table in ("notification_channel", "notification", "notification_alert", "notification_attempt"):
                    assert conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() == 0
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_0013_keeps_the_stored_history_and_rolls_it_up(kind, tmp_path):
    """Samples stored before the tiers (some twice) become one raw row each and their rollups; logs keep their ids
    and new ones continue after them; on PostgreSQL the tables come back partitioned by day."""
    rng = random.Random(11)
    now = now_ms()
    samples = [
        s | {"received_at": s["ts"]}
        for unit in ("mig-a", "mig-b")
        for s in random_samples(rng, unit, now - 3 * 86_400_000, 300, every_ms=600_000)
    ]
    samples.append(random_samples(rng, "mig-a", now - 20 * 86_400_000, 1)[0] | {"received_at": now})
    with database_url(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0012")
            columns = ["device_id", "ts", "received_at", *FIELDS]
            insert = text(
                f"INSERT INTO metric_sample ({', '.join(columns)}, services, extra) "
                f"VALUES ({', '.join(':' + c for c in columns)}, '{{}}', '{{}}')"
            )
            logs = text(
                "INSERT INTO log_record (device_id, rec_id, ts, received_at, level, level_no, source, msg) "
                "VALUES ('mig-a', :rec, :ts, :ts, 'info', 20, '', :msg)"
            )
            with engine.begin() as conn:
                conn.execute(insert, samples)
                conn.execute(insert, samples[:40])  # stored twice before (no key kept them apart)
                conn.execute(logs, [{"rec": f"r{i}", "ts": now - i * 3_600_000, "msg": f"line {i}"} for i in range(50)])
                before = dict(conn.execute(text("SELECT rec_id, id FROM log_record")).all())
            upgrade(engine, "head")
            with engine.begin() as conn:
                raw = conn.execute(text("SELECT COUNT(*) FROM metric_sample")).scalar_one()
                after = dict(conn.execute(text("SELECT rec_id, id FROM log_record")).all())
                conn.execute(logs, {"rec": "new", "ts": now, "msg": "after the upgrade"})
                new_id = conn.execute(text("SELECT id FROM log_record WHERE rec_id = 'new'")).scalar_one()
            assert raw == len(samples)
            assert after == before and new_id > max(before.values())
            for tier in (MINUTE, HOUR):
                assert mismatches(stored(engine, tier), brute_force(samples, tier.width_ms)) == [], tier.name
            if kind == "postgres":
                with engine.connect() as conn:
                    for table in ("metric_sample", "log_record", "metric_1m"):
                        assert partitions.is_partitioned(conn, table)
                    oldest = partitions.day_start(now - 20 * 86_400_000)
                    assert oldest in partitions.days(conn, "metric_sample")  # the data's oldest day, made for it
                    defaults = [
                        conn.execute(text(f"SELECT COUNT(*) FROM {table}_default")).scalar_one()
                        for table in ("metric_sample", "log_record", "metric_1m")
                    ]
                assert defaults == [0, 0, 0]
            upgrade(engine, "head")  # nothing left to do: a no-op
            downgrade(engine, "0012")
            with engine.connect() as conn:
                assert conn.execute(text("SELECT COUNT(*) FROM metric_sample")).scalar_one() == len(samples)
                assert conn.execute(text("SELECT COUNT(*) FROM log_record")).scalar_one() == 51
        finally:
            engine.dispose()


def downgrade(engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
