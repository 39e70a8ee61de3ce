"""PostgreSQL restarted under a running service: pooled connections are dead, the next database work succeeds."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text

from fleet_service.commands.dispatch import Dispatcher, build
from fleet_service.db import engine as db
from fleet_service.devices.models import Device
from tests.support.services import PG_ADMIN_DSN


def kill_connections(url: str) -> int:
    """What a database restart does to the service's pool: every server connection of that database ends."""
    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
    return len(rows)


def warm(engine, n: int = 3) -> None:
    """Leave n connections in the pool, as a busy service would."""
    conns = [engine.connect() for _ in range(n)]
    for c in conns:
        c.execute(text("SELECT 1"))
    for c in conns:
        c.close()


def test_a_command_is_stored_right_after_the_database_dropped_every_connection(postgres_url):
    engine = db.make_engine(postgres_url)
    try:
        db.migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                Device.__table__.insert().values(
                    id="u1",
                    name="",
                    tags=[],
                    secret_hash="x",
                    created_at=1,
                    online=False,
                    agent_version="",
                    software_version="",
                    boot_id="",
                    hostname="",
                    ips=[],
                    last_metrics={},
                    failing=False,
                    logs_dropped=0,
                    desired_config={},
                    desired_version=0,
                    reported_config={},
                    reported_version=0,
                )
            )
        dispatcher = Dispatcher(engine, link=None, bus=None)
        warm(engine)
        assert kill_connections(postgres_url) >= 1
        cmd = build("u1", "ping", {})
        assert dispatcher._store_new(cmd)  # a dead pooled connection used at once: retried once on a new one
        assert dispatcher._mark_sent(cmd.id, 5)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT status FROM command WHERE id = :i"), {"i": cmd.id}).scalar_one() == "sent"
    finally:
        engine.dispose()


def test_a_connection_idle_in_the_pool_is_checked_before_use(postgres_url, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.2)
    engine = db.make_engine(postgres_url)
    try:
        warm(engine)
        kill_connections(postgres_url)
        time.sleep(0.3)
        with engine.connect() as conn:  # no retry here: the checkout itself replaced the dead connection
            assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
    finally:
        engine.dispose()
