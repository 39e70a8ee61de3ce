"""Real agent processes for the terminal tests, enrolled in the running fleet and online before a test uses them."""

from __future__ import annotations

import pytest

from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses
from tests.support.services import wait_for


@pytest.fixture
def agents(tmp_path):
    procs = AgentProcesses(tmp_path)

    def start(fleet, device_id: str, *options: str):
        secret = fleet.enroll(device_id)
        proc = procs.start(
            fleet.mqtt_port,
            device_id,
            secret,
            "--keepalive",
            "5",
            "--heartbeat-interval",
            "1",
            "--relay-port",
            "0",
            *options,
            entry=PYTHON_M_AGENT,
        )
        wait_for(lambda: fleet.status(device_id)["online"], timeout=20, what=f"{device_id} online")
        return proc

    yield start
    procs.stop_all()


@pytest.fixture
def web():
    """The unit's own web server (HTTP and a WebSocket echo) on this machine's loopback, which is the agent's."""
    from tests.fleet_service.terminal.unit_web import UnitWeb

    server = UnitWeb()
    yield server
    server.close()
