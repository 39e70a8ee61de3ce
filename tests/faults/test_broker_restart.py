"""Item: Mosquitto restarted (SIGTERM or SIGKILL) under two replicas while units write: nothing lost or doubled.

Mosquitto does not keep what it queued for a `$share` group across a restart, and units that reconnect before
a replica has subscribed again get PUBACKs for messages nobody receives. Units keep each batch until the
service acknowledges it after its commit, and send again what is not acknowledged.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.agent_process import AgentProcesses
from tests.support.faults import AGENT_OPTIONS, LineWriter, assert_nothing_lost, kill_process, wait_online, wait_tallies
from tests.support.managed_mosquitto import accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for

UNITS = 4
RATE = 60  # lines/s per unit


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_broker_restart_under_two_replicas_loses_nothing(tmp_path, mosquitto_factory, postgres_url, sig):
    base = {"database_url": postgres_url, **settings_overrides(tmp_path / "mosquitto-files")}
    settings_a = settings_for(tmp_path / "a", replica_id="replica-a", **base)
    settings_b = settings_for(tmp_path / "b", replica_id="replica-b", **base)
    data = tmp_path / "mosquitto-data"
    data.mkdir()
    managed = start_managed_mosquitto(
        tmp_path,
        mosquitto_factory,
        settings_a,
        f"persistence true\npersistence_location {data}/\nautosave_interval 1\n",
    )
    agents = AgentProcesses(tmp_path)
    writers: list[LineWriter] = []
    with StackThread(settings_a) as a, StackThread(settings_b) as b, a.client() as api:
        wait_for(lambda: a.ctx.link.connected.is_set() and b.ctx.link.connected.is_set(), what="both connected")
        for i in range(UNITS):
            unit = f"unit-{i}"
            secret = api.post("/api/devices", json={"id": unit}).json()["secret"]
            wait_for(lambda u=unit, s=secret: accepts(managed.unit_port, u, s) == 0, what=f"{unit} accepted")
            writer = LineWriter(tmp_path / f"{unit}.lines", unit, RATE)
            agents.start(managed.unit_port, unit, secret, "--log-file", str(writer.path), *AGENT_OPTIONS)
            writers.append(writer)
        try:
            wait_online(api, [w.unit for w in writers])
            for writer in writers:
                writer.start()
            time.sleep(3)
            kill_process(managed.broker.proc, sig)
            time.sleep(1)
            managed.broker.start()  # same port, same persistence file
            Path(settings_a.mosquitto_pid_file).write_text(f"{managed.broker.proc.pid}\n")
            time.sleep(3)
            sent = {w.unit: w.stop() for w in writers}
            tallies = wait_tallies(postgres_url, sent, timeout=90)
        finally:
            for writer in writers:
                writer.stop()
            agents.stop_all()
    assert_nothing_lost(tallies, min_sent=6 * RATE + 1)
