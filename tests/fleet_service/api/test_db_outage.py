"""The database goes away under a running service: every API call answers 503 with Retry-After (as /health
does), not a bare 500, and the same calls work again once the database is back. PostgreSQL and SQLite."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fleet_service.api.db_errors import database_unavailable
from tests.support.auth import bearer, token_for
from tests.support.services import PG_ADMIN_DSN, wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for

UNIT = "outage-1"


class PostgresOutage:
    """The database refuses new connections and every open one is ended, as when the server goes down."""

    def __init__(self, url: str) -> None:
        self.name = url.rsplit("/", 1)[-1]

    def _admin(self, *statements: str) -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)

    def begin(self) -> None:
        self._admin(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'",
        )

    def end(self) -> None:
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


class SqliteOutage:
    """The database file cannot be opened any more (a directory stands in its place), as when its disk is gone."""

    def __init__(self, stack: StackThread) -> None:
        self.path = Path(stack.settings.database_url.split("///", 1)[1])
        self.engine = stack.ctx.engine
        self.moved: list[tuple[Path, Path]] = []

    def begin(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            here = Path(f"{self.path}{suffix}")
            if here.exists():
                aside = here.with_name(here.name + ".aside")
                os.rename(here, aside)
                self.moved.append((aside, here))
        self.path.mkdir()
        self.engine.dispose()  # pooled connections still hold the old file open; new ones cannot open it

    def end(self) -> None:
        if not self.path.is_dir():
            return
        self.path.rmdir()
        while self.moved:
            os.rename(*self.moved.pop())
        self.engine.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def outage(request, tmp_path):
    overrides = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    with StackThread(settings_for(tmp_path, **overrides)) as stack:
        with stack.client() as api:
            assert api.post("/api/devices", json={"id": UNIT}).status_code == 201
        down = PostgresOutage(stack.settings.database_url) if request.param == "postgres" else SqliteOutage(stack)
        try:
            yield stack, down
        finally:
            down.end()


def _unavailable(r) -> None:
    assert r.status_code == 503, (r.request.method, r.request.url, r.status_code, r.text)
    assert int(r.headers["Retry-After"]) >= 1
    assert "database" in r.json()["detail"]


def test_api_calls_answer_503_while_the_database_is_down_and_work_again_after(outage):
    stack, down = outage
    viewer = token_for(stack, "viewer")  # checked against the database on every call
    down.begin()
    with stack.client() as api:
        assert api.get("/health").status_code == 503
        _unavailable(api.get("/api/devices"))
        _unavailable(api.get(f"/api/devices/{UNIT}"))
        _unavailable(api.post(f"/api/devices/{UNIT}/restart"))
        _unavailable(api.get("/api/devices", headers=bearer(viewer)))  # not 401: the token may well be right
        _unavailable(api.post("/api/auth/login", json={"username": "nobody", "password": "whatever it is"}))
    relay = stack.url.replace("http://", "ws://") + f"/api/devices/{UNIT}/relay"
    with connect(relay, additional_headers=bearer(ADMIN_TOKEN)) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1013  # try again later
    down.end()
    with stack.client() as api:
        wait_for(lambda: api.get("/api/devices").status_code == 200, timeout=30, what="the API reading again")
        assert api.get(f"/api/devices/{UNIT}").status_code == 200
        assert api.post(f"/api/devices/{UNIT}/restart").status_code == 202
        assert api.get("/api/devices", headers=bearer(viewer)).status_code == 200
        assert api.get("/health").status_code == 200


def _error_of(engine, statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(statement))
    return caught.value


def test_only_errors_of_an_unreachable_database_count_as_unavailable(tmp_path):
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.execute("BEGIN EXCLUSIVE")  # another process writing
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        assert database_unavailable(_error_of(engine, "INSERT INTO t VALUES (1)"))  # database is locked
        holder.execute("COMMIT")
        assert not database_unavailable(_error_of(engine, "SELECT * FROM no_such_table"))  # a bug stays a 500
        assert not database_unavailable(_error_of(engine, "INSERT INTO t VALUES (1), (1)"))  # so does a constraint
    finally:
        engine.dispose()
        holder.close()
    gone = create_engine(f"sqlite:///{tmp_path}")  # a directory: unable to open database file
    try:
        assert database_unavailable(_error_of(gone, "SELECT 1"))
    finally:
        gone.dispose()


def test_postgresql_errors_that_are_bugs_are_not_unavailability(postgres_url):
    engine = create_engine(postgres_url)
    try:
        assert not database_unavailable(_error_of(engine, "SELECT * FROM no_such_table"))
        assert not database_unavailable(_error_of(engine, "SELECT 1 / 0"))
        assert not database_unavailable(_error_of(engine, "SELECT 99999999999999999999::bigint"))
    finally:
        engine.dispose()
