"""Migrations on a database that already holds units: 0004 fills `device.failing` from the stored metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from fleet_service.db import MIGRATIONS, make_engine
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
                    conn.execute(text(
                        "INSERT INTO device (id, name, tags, secret_hash, created_at, online, agent_version, "
                        "software_version, boot_id, hostname, ips, last_metrics, logs_dropped, desired_config, "
                        "desired_version, reported_config, reported_version) VALUES (:id, '', '[]', 'x', 1, "
                        ":online, '', '', '', '', '[]', :metrics, 0, '{}', 0, '{}', 0)"),
                        {"id": device_id, "online": online, "metrics": metrics})
            upgrade(engine, "head")
            with engine.connect() as conn:
                failing = {r.id for r in conn.execute(text("SELECT id FROM device WHERE failing"))}
                counted = conn.execute(text("SELECT count(*) FROM device WHERE online AND failing")).scalar_one()
            assert failing == {"svc", "extra", "away"}
            assert counted == 2  # the offline unit keeps its flag but is not counted
        finally:
            engine.dispose()
