"""Controllers <-> service <-> broker <-> the real agent process <-> the recorder on the agent's loopback port.

Also TURN for the recorder: the agent fetches credentials with the unit's secret and hands them on through
its file and its loopback endpoint; the real coturn accepts them, and a service that cannot issue any is
reported to the recorder as a 503 with the reason.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.agent_process import PYTHON_M_AGENT, AgentProcesses
from tests.support.services import free_port, require, wait_for, wait_port
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for
from tests.turn_service.coturn import Coturn

TURN_SECRET = "turn-secret-for-relay-agent-tests"


@pytest.fixture(autouse=True)
def _no_turn_from_the_environment(monkeypatch):
    monkeypatch.delenv("FLEET_TURN_URLS", raising=False)
    monkeypatch.delenv("FLEET_TURN_SECRETS", raising=False)


@pytest.fixture
def agent_proc(tmp_path):
    """Start `python -m agent` (as the installed unit runs it); stopped at teardown if still running."""
    agents = AgentProcesses(tmp_path)

    def start(mqtt_port: int, device_id: str, secret: str, *extra: str):
        return agents.start(
            mqtt_port,
            device_id,
            secret,
            "--keepalive",
            "5",
            "--heartbeat-interval",
            "1",
            "--metrics-interval",
            "5",
            *extra,
            entry=PYTHON_M_AGENT,
        )

    yield start
    agents.stop_all()


def _controller(stack: StackThread, device_id: str):
    url = stack.url.replace("http://", "ws://") + f"/api/devices/{device_id}/relay"
    return connect(url, additional_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, open_timeout=10)


@pytest.fixture
def watch():
    """watch(path): (wall time first seen, TURN username) for each version of the file, read every 50 ms."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(path: Path) -> list[tuple[float, str]]:
        seen: list[tuple[float, str]] = []

        def poll() -> None:
            while not stop.wait(0.05):
                username = json.loads(path.read_text())["iceServers"][1]["username"]
                if not seen or seen[-1][1] != username:
                    seen.append((time.time(), username))

        threads.append(threading.Thread(target=poll, daemon=True))
        threads[-1].start()
        return seen

    yield start
    stop.set()
    for t in threads:
        t.join(5)


def _agent_log(tmp_path: Path, device_id: str) -> str:
    return (tmp_path / f"{device_id}.log").read_text(errors="replace")


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_two_controllers_and_a_recorder_talk_through_service_broker_and_agent(fleet, agent_proc, tmp_path):
    secret = fleet.enroll("r58-relay")
    port = free_port()
    proc = agent_proc(fleet.mqtt_port, "r58-relay", secret, "--relay-port", str(port), "--api-url", fleet.stack.url)
    wait_for(lambda: fleet.status("r58-relay")["online"], timeout=20, what="agent online")
    wait_port(port)

    with (
        connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as recorder,
        _controller(fleet.stack, "r58-relay") as a,
        _controller(fleet.stack, "r58-relay") as b,
    ):
        wait_for(lambda: fleet.api.get("/api/relay/health").json()["controllers"] == 2, what="2 controllers")
        offer = json.dumps({"type": "offer", "sdp": "v=0 offer from controller a"})
        a.send(offer)
        assert recorder.recv(timeout=10) == offer

        answer = json.dumps({"type": "answer", "sdp": "v=0 answer from the recorder"})
        recorder.send(answer)
        assert a.recv(timeout=10) == answer
        assert b.recv(timeout=10) == answer

        candidate = json.dumps({"type": "candidate", "candidate": "candidate:2 1 udp 7 127.0.0.1 9 typ host"})
        b.send(candidate)
        assert recorder.recv(timeout=10) == candidate

        # The service has no TURN configured: the recorder hears why, and the agent carries on.
        r = httpx.get(f"http://127.0.0.1:{port}/turn-credentials", timeout=15)
        assert r.status_code == 503 and "TURN is not configured" in r.json()["detail"], r.text
        recorder.send(json.dumps({"type": "bye"}))
        assert json.loads(a.recv(timeout=10)) == {"type": "bye"}

    assert proc.poll() is None
    log = _agent_log(tmp_path, "r58-relay")
    assert "TURN credentials unavailable" in log and "Traceback" not in log and secret not in log


def test_recorder_gets_turn_credentials_that_coturn_accepts_and_fresh_ones_before_expiry(
    tmp_path, monkeypatch, agent_proc, watch
):
    require(shutil.which("turnserver") is not None, "coturn is not installed (apt install coturn)")
    coturn = Coturn(tmp_path / "coturn", [TURN_SECRET]).start()
    monkeypatch.setenv("FLEET_TURN_SECRETS", TURN_SECRET)
    monkeypatch.setenv("FLEET_TURN_URLS", f"stun:127.0.0.1:{coturn.port},turn:127.0.0.1:{coturn.port}?transport=udp")
    try:
        with StackThread(settings_for(tmp_path)) as stack, stack.client() as api:
            secret = api.post("/api/devices", json={"id": "r58-turn"}).json()["secret"]
            port = free_port()
            turn_dir = tmp_path / "turn"
            turn_dir.mkdir()
            turn_file = turn_dir / "turn.json"
            agent_proc(
                stack.mqtt_port,
                "r58-turn",
                secret,
                "--relay-port",
                str(port),
                "--api-url",
                stack.url,
                "--turn-file",
                str(turn_file),
                "--turn-ttl",
                "4",
            )

            first = wait_for(
                lambda: turn_file.exists() and json.loads(turn_file.read_text()), timeout=20, what="TURN file"
            )
            seen = watch(turn_file)  # every version of the file, with the time it was first read
            assert oct(turn_file.stat().st_mode & 0o777) == "0o640"
            relay = first["iceServers"][1]
            assert coturn.uclient(relay["username"], relay["credential"]).returncode == 0

            wait_port(port)
            r = httpx.get(f"http://127.0.0.1:{port}/turn-credentials", timeout=15)
            assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
            served = r.json()
            assert served["iceServers"][0] == {"urls": [f"stun:127.0.0.1:{coturn.port}"]}
            assert 0 < served["ttl"] <= 4
            relay = served["iceServers"][1]
            assert coturn.uclient(relay["username"], relay["credential"]).returncode == 0

            # Refreshed at about half the TTL: each credential is replaced before it expires.
            wait_for(lambda: len(seen) >= 3, timeout=8, what="two refreshes of the TURN file")
            versions = list(seen)
            for (_, old), (when, new) in zip(versions, versions[1:], strict=False):
                old_expiry = int(old.split(":")[0])
                assert when < old_expiry and int(new.split(":")[0]) > old_expiry
            latest = json.loads(turn_file.read_text())["iceServers"][1]
            assert coturn.uclient(latest["username"], latest["credential"]).returncode == 0
        log = _agent_log(tmp_path, "r58-turn")
        assert secret not in log and "Traceback" not in log
    finally:
        coturn.stop()
