"""The real `fleet agent` process against the real service: presence, metrics, logs, a command, kill and stop."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from tests.support.agent_process import AgentProcesses
from tests.support.services import wait_for


@pytest.fixture
def agent_proc(fleet, tmp_path):
    agents = AgentProcesses(tmp_path)

    def start(device_id: str, secret: str, *extra: str):
        return agents.start(
            fleet.mqtt_port,
            device_id,
            secret,
            "--keepalive",
            "2",
            "--heartbeat-interval",
            "1",
            "--metrics-interval",
            "1",
            "--software-version",
            "5.1.0",
            *extra,
        )

    yield start
    agents.stop_all()


def test_agent_reports_takes_a_command_and_goes_offline(fleet, agent_proc, tmp_path):
    secret = fleet.enroll("r58-1", name="Stage left")
    log_file = tmp_path / "recorder.log"
    log_file.write_text("")
    marker = tmp_path / "restarted"
    restart = f"{sys.executable} -c \"open('{marker}', 'a').write('{{unit}}\\n')\""
    proc = agent_proc(
        "r58-1",
        secret,
        "--log-file",
        str(log_file),
        "--unit",
        "recorder.service",
        "--restart-command",
        restart,
        "--check-command",
        "true {unit}",
        "--log-batch-interval",
        "0.2",
    )

    status = wait_for(
        lambda: (s := fleet.status("r58-1"))["online"] and s["ips"] and s,
        timeout=20,
        what="agent online with heartbeat",
    )
    assert status["software_version"] == "5.1.0" and status["agent_version"]
    metrics = wait_for(
        lambda: fleet.api.get("/api/devices/r58-1/metrics").json()["points"], timeout=10, what="real metrics"
    )
    assert 0 <= metrics[-1]["cpu_percent"] <= 100 and metrics[-1]["mem_percent"] > 0

    with log_file.open("a") as f:
        f.write("camera 3 connected\n")
    wait_for(
        lambda: any(r["msg"] == "camera 3 connected" for r in fleet.api.get("/api/devices/r58-1/logs").json()["items"]),
        timeout=10,
        what="log line",
    )

    cmd = fleet.api.post("/api/devices/r58-1/restart").json()
    done = wait_for(
        lambda: (c := fleet.api.get(f"/api/commands/{cmd['id']}").json())["status"] in ("succeeded", "failed") and c,
        timeout=15,
        what="restart result",
    )
    assert done["status"] == "succeeded", done
    assert marker.read_text().strip() == "recorder.service"
    assert [h["status"] for h in done["history"]][:2] == ["queued", "sent"]

    proc.send_signal(signal.SIGKILL)
    start = time.monotonic()
    wait_for(lambda: not fleet.status("r58-1")["online"], timeout=10, what="offline after SIGKILL")
    assert time.monotonic() - start <= 1.5 * 2 + 1.5

    proc = agent_proc("r58-1", secret)
    wait_for(lambda: fleet.status("r58-1")["online"], timeout=20, what="online again")
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    wait_for(lambda: not fleet.status("r58-1")["online"], timeout=5, what="offline after clean stop")
    assert time.monotonic() - start < 1.5
    assert proc.wait(10) == 0
