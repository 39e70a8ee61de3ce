"""Credential stores against a real SQLite file, and revocation on a running broker."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import create_engine, text

from broker.credentials import SERVICE, Principal, SqlCredentialStore, StaticCredentialStore, sync_url
from protocol.ids import SERVICE_USERNAME
from protocol.secrets import hash_secret
from tests.broker.wire_client import WireClient


@pytest.fixture
def device_db(tmp_path, unit_hashes):
    """A SQLite file with a `device(id, secret_hash)` table holding u1 and u2, as fleet_service keeps it."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE device (id VARCHAR(63) PRIMARY KEY, secret_hash VARCHAR(200) NOT NULL)"))
        for unit in ("u1", "u2"):
            conn.execute(
                text("INSERT INTO device (id, secret_hash) VALUES (:id, :h)"), {"id": unit, "h": unit_hashes[unit]}
            )
    yield url, engine
    engine.dispose()


async def test_sql_store_checks_units_and_the_service_account(device_db):
    url, _ = device_db
    store = SqlCredentialStore(url, "svc-secret")
    try:
        assert await store.authenticate("u1", "secret-u1") == Principal("unit", "u1")
        assert await store.authenticate("u1", "secret-u2") is None
        assert await store.authenticate("u3", "secret-u3") is None  # no row: unknown or revoked
        assert await store.authenticate("U1", "secret-u1") is None  # not a device id
        assert await store.authenticate("u1", None) is None
        assert await store.authenticate(None, None) is None
        assert await store.authenticate(SERVICE_USERNAME, "svc-secret") == SERVICE
        assert await store.authenticate(SERVICE_USERNAME, "wrong") is None
    finally:
        store.close()


async def test_sql_store_cache_is_dropped_by_forget(device_db):
    url, engine = device_db
    store = SqlCredentialStore(url, None)
    try:
        assert await store.authenticate("u1", "secret-u1") is not None
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM device WHERE id = 'u1'"))
        assert await store.authenticate("u1", "secret-u1") is not None  # cached for a minute
        store.forget("u1")
        assert await store.authenticate("u1", "secret-u1") is None
        assert await store.authenticate(SERVICE_USERNAME, "") is None  # no service secret: account disabled
    finally:
        store.close()


async def test_sql_store_refuses_when_the_table_is_missing(tmp_path, caplog):
    store = SqlCredentialStore(f"sqlite:///{tmp_path / 'empty.db'}", None)
    try:
        with caplog.at_level(logging.WARNING, logger="broker.credentials"):
            assert await store.authenticate("u1", "secret-u1") is None
        assert "device lookup failed" in caplog.text and "secret-u1" not in caplog.text
    finally:
        store.close()


async def test_static_store_checks_off_the_event_loop():
    store = StaticCredentialStore("s", {"u1": hash_secret("a")})
    results = await asyncio.gather(*(store.authenticate("u1", p) for p in ("a", "b", "a")))
    assert results == [Principal("unit", "u1"), None, Principal("unit", "u1")]
    store.remove_unit("u1")
    assert await store.authenticate("u1", "a") is None


def test_sync_url_maps_async_drivers():
    assert sync_url("sqlite+aiosqlite:////x/fleet.db") == "sqlite:////x/fleet.db"
    assert sync_url("postgresql+asyncpg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sync_url("postgresql+psycopg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


def test_revoked_unit_is_cut_off_and_cannot_reconnect(start_broker, device_db):
    url, engine = device_db
    store = SqlCredentialStore(url, "svc-secret")
    running = start_broker(credentials=store)
    try:
        unit = running.wire("u1")
        assert unit.subscribe("fleet/u1/cmd") == [1]
        with engine.begin() as conn:  # fleet_service deletes the device ...
            conn.execute(text("DELETE FROM device WHERE id = 'u1'"))
        store.forget("u1")  # ... and tells the broker
        assert running.call(running.broker.disconnect("u1")) is True
        assert unit.closed_by_broker(3)
        assert WireClient(running.port).connect("u1", "u1", "secret-u1") == 4
        assert running.call(running.broker.disconnect("u1")) is False
        other = running.wire("u2")  # the others are unaffected
        other.ping()
    finally:
        store.close()
