"""A hand-driven unit speaking the wire protocol with paho, for tests that need exact control."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt

from protocol.ids import new_id, now_ms
from protocol.topics import Kind, topic


class RawUnit:
    def __init__(
        self,
        port: int,
        device_id: str,
        secret: str | None,
        *,
        keepalive: int = 30,
        client_id: str | None = None,
        will: bool = True,
    ) -> None:
        self.device_id = device_id
        self.session = new_id()
        self.received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: int | None = None
        self._connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or device_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if secret is not None:
            self.client.username_pw_set(device_id, secret)
        if will:
            self.client.will_set(
                topic(device_id, Kind.STATE),
                json.dumps({"v": 1, "online": False, "session": self.session}),
                qos=1,
                retain=True,
            )
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.received.put(m)
        self.port = port
        self.keepalive = keepalive

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connack = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        if self.connack == 0:
            self._connected.set()

    def connect(self, timeout: float = 10) -> RawUnit:
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.client.disconnect()
            self.client.loop_stop()
            raise AssertionError(f"unit {self.device_id} could not connect (CONNACK {self.connack})")
        return self

    def publish(self, kind: Kind, payload: dict[str, Any] | bytes, qos: int = 1, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic(self.device_id, kind), data, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(10)

    def publish_raw(self, name: str, data: bytes, qos: int = 1) -> None:
        self.client.publish(name, data, qos=qos).wait_for_publish(10)

    def birth(self, software_version: str = "1.0.0") -> None:
        self.publish(
            Kind.STATE,
            {
                "v": 1,
                "online": True,
                "ts": now_ms(),
                "session": self.session,
                "agent_version": "test",
                "software_version": software_version,
                "boot_id": "boot-1",
            },
            retain=True,
        )

    def subscribe(self, kind: Kind) -> None:
        self.client.subscribe(topic(self.device_id, kind), qos=1)

    def stop_clean(self) -> None:
        self.publish(Kind.STATE, {"v": 1, "online": False, "session": self.session, "ts": now_ms()}, retain=True)
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, the way a crash or power cut does."""
        self.client._sock.close() if self.client._sock else None
        self.client.loop_stop()
