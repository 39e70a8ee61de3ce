"""Item: `fleet up` killed with SIGKILL while units write: every acknowledged line is stored once after it returns.

amqtt acknowledges a message when it has it in memory and ingest queues in memory, so a crash used to lose
what the broker had acknowledged. Units now keep each batch until the service acknowledges it after its commit.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.agent_process import AgentProcesses
from tests.support.faults import (
    AGENT_OPTIONS,
    FleetUpProcess,
    LineWriter,
    assert_nothing_lost,
    wait_online,
    wait_tallies,
)

UNITS = 3
KILLS = 5
BURST = 400  # lines per unit before each kill


def start_agents(tmp_path, mqtt_port: int, secrets: dict[str, str]) -> tuple[AgentProcesses, list[LineWriter]]:
    agents = AgentProcesses(tmp_path)
    writers = []
    for unit, secret in secrets.items():
        writer = LineWriter(tmp_path / f"{unit}.lines", unit, rate=0)
        agents.start(mqtt_port, unit, secret, "--log-file", str(writer.path), *AGENT_OPTIONS)
        writers.append(writer)
    return agents, writers


@pytest.mark.slow
def test_sigkill_of_fleet_up_loses_no_acknowledged_line(tmp_path):
    fleet = FleetUpProcess(tmp_path / "fleet").start()
    with fleet.client() as api:
        secrets = {
            f"unit-{i}": api.post("/api/devices", json={"id": f"unit-{i}"}).json()["secret"] for i in range(UNITS)
        }
    agents, writers = start_agents(tmp_path, fleet.mqtt_port, secrets)
    try:
        with fleet.client() as api:
            wait_online(api, list(secrets))
        for kill in range(KILLS):
            # A burst, then the kill while the broker has acknowledged batches that ingest has not committed.
            for writer in writers:
                writer.write_now(BURST)
            time.sleep(0.1 + 0.1 * kill)
            fleet.kill(signal.SIGKILL)
            fleet.start()
        for writer in writers:
            writer.write_now(BURST)
        sent = {w.unit: w.sent for w in writers}
        tallies = wait_tallies(fleet.database_url, sent, timeout=60)
    finally:
        agents.stop_all()
        fleet.stop()
    assert_nothing_lost(tallies)
