"""The event loop's own PostgreSQL statements (a command's writes, the audit row, the caller's token): they survive a
restarted server, refuse bad writes the way the synchronous engine does, stay within their pool, and a cancelled
request never leaves a half-used connection behind."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from fleet_service.auth.audit import record_on_loop
from fleet_service.auth.credentials import Authenticator, create_token, revoke_token
from fleet_service.commands.dispatch import build
from fleet_service.commands.writes import mark_sent_on_loop, store_for_unit_on_loop
from fleet_service.db import engine as db
from fleet_service.db.on_loop import LoopDatabase, LoopStatement
from fleet_service.devices.enrollment import enroll
from tests.fleet_service.commands.stored import stored
from tests.fleet_service.db.test_db_reconnect import kill_connections
from tests.support.services import PG_ADMIN_DSN, free_port


@pytest.fixture
def pg(postgres_url):
    engine = db.make_engine(postgres_url)
    db.migrate(engine)
    enroll(engine, "u1")
    yield engine, LoopDatabase.beside(engine)
    engine.dispose()


def our_connections(engine) -> int:
    name = engine.url.database
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        q = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        return admin.execute(q, (name,)).fetchone()[0]


def test_only_postgresql_gets_one(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    assert LoopDatabase.beside(engine) is None  # SQLite keeps its worker-thread path
    engine.dispose()


def test_a_command_is_stored_and_marked_sent_right_after_the_server_dropped_every_connection(pg):
    engine, loop_db = pg

    async def scenario():
        first = build("u1", "ping", {})
        assert await store_for_unit_on_loop(loop_db, first)  # leaves a connection in the pool
        assert kill_connections(str(engine.url.render_as_string(hide_password=False))) >= 1
        cmd = build("u1", "ping", {})
        assert await store_for_unit_on_loop(loop_db, cmd)  # the dead pooled one fails; once more on a new one
        assert await mark_sent_on_loop(loop_db, cmd.id, 5)
        assert not await store_for_unit_on_loop(loop_db, build("nope", "ping", {}))  # no such unit: nothing stored
        await loop_db.dispose()
        return cmd.id

    cmd_id = asyncio.run(scenario())
    engine.dispose()  # its own pooled connection was dropped too
    assert stored(engine, cmd_id).status == "sent"


def test_a_refused_write_is_sqlalchemys_error_and_the_connection_serves_the_next_one(pg):
    engine, loop_db = pg

    async def scenario():
        cmd = build("u1", "ping", {})
        assert await store_for_unit_on_loop(loop_db, cmd)
        with pytest.raises(IntegrityError):  # the same id again: what the synchronous engine raises
            await store_for_unit_on_loop(loop_db, cmd)
        assert await mark_sent_on_loop(loop_db, cmd.id, 7)
        await loop_db.dispose()
        return cmd.id

    assert stored(engine, asyncio.run(scenario())).status == "sent"


def test_an_unreachable_server_is_an_operational_error(pg):
    loop_db = LoopDatabase(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")

    async def scenario():
        with pytest.raises(OperationalError):  # the API answers it with 503, as for the synchronous engine
            await store_for_unit_on_loop(loop_db, build("u1", "ping", {}))

    asyncio.run(scenario())


def test_a_connection_idle_in_the_pool_is_checked_before_use(pg, monkeypatch, caplog):
    engine, loop_db = pg
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.2)

    async def scenario():
        assert await store_for_unit_on_loop(loop_db, build("u1", "ping", {}))
        kill_connections(str(engine.url.render_as_string(hide_password=False)))
        await asyncio.sleep(0.3)
        caplog.clear()
        assert await store_for_unit_on_loop(loop_db, build("u1", "ping", {}))
        await loop_db.dispose()

    asyncio.run(scenario())
    assert "retrying once" not in caplog.text  # the ping found it dead: the statement itself never failed


def test_concurrent_statements_stay_within_the_pool_and_a_cancelled_one_leaves_no_busy_connection(pg):
    engine, _ = pg
    loop_db = LoopDatabase.beside(engine, size=3)
    sleep = LoopStatement(text("SELECT pg_sleep(:s)"))

    async def scenario():
        many = [asyncio.create_task(loop_db.run(sleep, {"s": 0.3})) for _ in range(12)]
        await asyncio.sleep(0.15)
        during = await asyncio.to_thread(our_connections, engine)
        await asyncio.gather(*many)
        slow = asyncio.create_task(loop_db.run(sleep, {"s": 5}))
        await asyncio.sleep(0.2)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        started = time.monotonic()
        await loop_db.run(sleep, {"s": 0})  # not queued behind the cancelled statement on its connection
        quick = time.monotonic() - started
        await loop_db.dispose()
        return during, quick

    during, quick = asyncio.run(scenario())
    assert 1 <= during <= 3 + 1  # three of ours (and the engine's own, if it holds one)
    assert quick < 1.0


def test_a_token_is_checked_on_the_loop_and_a_revoked_one_is_refused_at_once(pg):
    engine, loop_db = pg
    row, plain = create_token(engine, "operator", "ci")
    auth = Authenticator(engine, "bootstrap-secret-token", loop_db=loop_db)

    async def check(token: str):
        return await auth.bearer_on_loop(token)

    async def scenario():
        first = await check(plain)
        wrong = await check(plain[:-2] + "xx")
        bootstrap = await check("bootstrap-secret-token")
        await asyncio.to_thread(revoke_token, engine, row.id)
        after = await check(plain)
        await loop_db.dispose()
        return first, wrong, bootstrap, after

    first, wrong, bootstrap, after = asyncio.run(scenario())
    assert (first.kind, first.name, first.role) == ("token", "ci", "operator")
    assert wrong is None and after is None
    assert (bootstrap.kind, bootstrap.role) == ("bootstrap", "admin")


def test_an_audit_row_written_on_the_loop_holds_every_field(pg):
    engine, loop_db = pg
    fields = {
        "actor": "token:ci",
        "role": "operator",
        "method": "POST",
        "route": "/api/devices/{device_id}/commands",
        "path": "/api/devices/u1/commands",
        "target": "u1",
        "status": 202,
        "source_ip": "10.0.0.7",
    }

    async def scenario():
        await record_on_loop(loop_db, **fields)
        await loop_db.dispose()

    asyncio.run(scenario())
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_entry")).mappings().one()
    assert {key: row[key] for key in fields} == fields and row["ts"] > 0
