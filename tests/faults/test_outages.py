"""The outages that already ended well, kept proven: service stopped for a while, a unit killed with a backlog,
and the database unreachable for 20 s under a running service. Every numbered line arrives once."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from tests.faults.test_service_crash import start_agents
from tests.support.agent_process import AgentProcesses
from tests.support.faults import (
    AGENT_OPTIONS,
    FleetUpProcess,
    LineWriter,
    assert_nothing_lost,
    kill_process,
    wait_online,
    wait_tallies,
)
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import PG_ADMIN_DSN, wait_for
from tests.support.stack import StackThread, settings_for

DOWN_S = 15  # the soak (benchmarks/fault_soak.py) keeps the broker away 60 s


@pytest.mark.slow
def test_service_away_and_a_unit_killed_with_its_backlog_lose_nothing(tmp_path):
    fleet = FleetUpProcess(tmp_path / "fleet").start()
    with fleet.client() as api:
        secrets = {f"unit-{i}": api.post("/api/devices", json={"id": f"unit-{i}"}).json()["secret"] for i in range(3)}
    agents, writers = start_agents(tmp_path, fleet.mqtt_port, secrets)
    try:
        with fleet.client() as api:
            wait_online(api, list(secrets))
        for writer in writers:
            writer.write_now(200)
        fleet.kill(signal.SIGTERM)  # a clean stop while units write; the broker is away with it
        for writer in writers:
            writer.write_now(300)  # the backlog waits in each unit's outbox
        time.sleep(2)
        victim = agents.procs[0]
        kill_process(victim, signal.SIGKILL)  # a unit dies with its backlog on disk
        time.sleep(DOWN_S - 2)
        fleet.start()
        agents.procs[0] = agents.start(
            fleet.mqtt_port, "unit-0", secrets["unit-0"], "--log-file", str(writers[0].path), *AGENT_OPTIONS
        )
        for writer in writers:
            writer.write_now(100)
        tallies = wait_tallies(fleet.database_url, {w.unit: w.sent for w in writers}, timeout=60)
    finally:
        agents.stop_all()
        fleet.stop()
    assert [t.sent for t in tallies] == [600] * len(tallies)
    assert_nothing_lost(tallies)


def set_connections(database: str, allowed: bool) -> None:
    """Make our own database refuse (or accept) connections and cut the open ones: an outage of it alone."""
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


@pytest.mark.slow
def test_database_away_20s_under_a_running_service_loses_nothing(tmp_path, mosquitto_factory, postgres_url):
    database = postgres_url.rsplit("/", 1)[1]
    settings = settings_for(tmp_path, database_url=postgres_url, **settings_overrides(tmp_path / "files"))
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings)
    agents = AgentProcesses(tmp_path)
    writers: list[LineWriter] = []
    with StackThread(settings) as stack, stack.client() as api:
        wait_for(lambda: stack.ctx.link.connected.is_set(), what="service connected")
        for i in range(3):
            unit = f"unit-{i}"
            secret = api.post("/api/devices", json={"id": unit}).json()["secret"]
            wait_for(lambda u=unit, s=secret: accepts(managed.unit_port, u, s) == 0, what=f"{unit} accepted")
            writer = LineWriter(tmp_path / f"{unit}.lines", unit, rate=40)
            agents.start(managed.unit_port, unit, secret, "--log-file", str(writer.path), *AGENT_OPTIONS)
            writers.append(writer)
        try:
            wait_online(api, [w.unit for w in writers])
            for writer in writers:
                writer.start()
            time.sleep(2)
            set_connections(database, allowed=False)
            try:
                time.sleep(20)
                assert api.get("/health").status_code == 503
            finally:
                set_connections(database, allowed=True)
            time.sleep(2)
            sent = {w.unit: w.stop() for w in writers}
            tallies = wait_tallies(postgres_url, sent, timeout=90)
        finally:
            for writer in writers:
                writer.stop()
            agents.stop_all()
    assert_nothing_lost(tallies, min_sent=801)
