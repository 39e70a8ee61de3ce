"""Agent test fixtures: a real Mosquitto, a real MQTT client on the service side, agents with short intervals."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import AgentSettings, load_settings
from agent.runner import Agent
from protocol.ids import new_id, now_ms
from protocol.topics import Kind, topic
from tests.support.services import Mosquitto, wait_for

ANON = "allow_anonymous true\n"


class Service:
    """The service side: subscribes to everything under fleet/, records it, acks it end to end as the fleet
    service does (set `acking` False to play a service that is gone), and sends commands."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.acking = True
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"svc-{new_id()[:8]}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("fleet/#", qos=1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"raw": msg.payload.decode("utf-8", "replace")}
        with self._lock:
            self.messages.append((msg.topic, body, bool(msg.retain)))
        ack_id = body.get("ack_id") if isinstance(body, dict) else None
        if ack_id and self.acking and not msg.topic.endswith("/ack"):
            unit = msg.topic.split("/")[1]
            client.publish(topic(unit, Kind.ACK), json.dumps({"v": 1, "ids": [ack_id]}), qos=0)

    def of(self, device_id: str, kind: Kind) -> list[dict[str, Any]]:
        """Messages on one topic; a reliable message sent again (same ack id) counts once, as the service stores it."""
        name = topic(device_id, kind)
        seen: set[str] = set()
        out = []
        with self._lock:
            for t, body, _ in self.messages:
                if t != name or body.get("ack_id") in seen:
                    continue
                if body.get("ack_id"):
                    seen.add(body["ack_id"])
                out.append(body)
        return out

    def wait(
        self,
        device_id: str,
        kind: Kind,
        pred: Callable[[dict[str, Any]], bool] = lambda b: True,
        timeout: float = 15.0,
        count: int = 1,
    ) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            hits = [b for b in self.of(device_id, kind) if pred(b)]
            return hits if len(hits) >= count else None

        return wait_for(found, timeout=timeout, what=f"{count} x {kind.value} from {device_id}")

    def results(self, device_id: str, cmd_id: str) -> list[dict[str, Any]]:
        return [b for b in self.of(device_id, Kind.CMD_RESULT) if b.get("id") == cmd_id]

    def wait_final(self, device_id: str, cmd_id: str, timeout: float = 20.0) -> dict[str, Any]:
        final = {"succeeded", "failed", "rejected", "expired"}
        hits = self.wait(
            device_id, Kind.CMD_RESULT, lambda b: b.get("id") == cmd_id and b["status"] in final, timeout=timeout
        )
        return hits[0]

    def command(
        self,
        device_id: str,
        name: str,
        args: dict | None = None,
        *,
        cmd_id: str | None = None,
        expires_at: int | None = None,
    ) -> str:
        cmd_id = cmd_id or new_id()
        body = {"v": 1, "id": cmd_id, "name": name, "args": args or {}, "ts": now_ms(), "expires_at": expires_at}
        self.client.publish(topic(device_id, Kind.CMD), json.dumps(body), qos=1).wait_for_publish(5)
        return cmd_id

    def publish(self, device_id: str, kind: Kind, body: dict[str, Any], retain: bool = False) -> None:
        self.client.publish(topic(device_id, kind), json.dumps(body), qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(mosquitto_factory) -> Mosquitto:
    return mosquitto_factory(ANON)


@pytest.fixture
def service(broker) -> Iterator[Service]:
    svc = Service(broker.port)
    wait_for(lambda: svc.client.is_connected(), what="service client connected")
    yield svc
    svc.close()


def fast_settings(tmp_path: Path, broker_url: str, device_id: str = "unit-1", **overrides: Any) -> AgentSettings:
    """Settings with intervals short enough for tests; everything else from the arguments."""
    values: dict[str, Any] = {
        "device_id": device_id,
        "broker_url": broker_url,
        "state_dir": tmp_path / f"state-{device_id}",
        "heartbeat_interval": 0.5,
        "metrics_interval": 0.5,
        "keepalive": 5,
        "reconnect_min_delay": 0.1,
        "reconnect_max_delay": 0.5,
        "log_batch_interval": 0.2,
        "file_poll_interval": 0.05,
        "health_timeout": 3.0,
        "command_timeout": 20.0,
        "check_command": f"{sys.executable} -c pass {{unit}}",
        "restart_command": f"{sys.executable} -c pass {{unit}}",
        "reboot_command": f"{sys.executable} -c pass",
    }
    values.update(overrides)
    return load_settings(None, **values)


@pytest.fixture
def agents() -> Iterator[Callable[..., Agent]]:
    """Start agents from settings; every one still running is stopped at teardown."""
    started: list[Agent] = []

    def start(settings: AgentSettings) -> Agent:
        agent = Agent(settings)
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop(clean=True, timeout=3)


def script(path: Path, body: str) -> str:
    """Write a small Python program and return the command line that runs it."""
    path.write_text(body)
    return f"{sys.executable} {path}"
