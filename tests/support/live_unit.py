"""A unit's MQTT connection (paho) that notes when the broker cut it and what it published, for credential tests."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from tests.support.services import wait_for


class LiveUnit:
    """Connected as `device_id` with `secret`; paho's own reconnects are on (with the same credentials unless
    `use` changes them), so a refused reconnect shows as CONNACK codes in `refusals`."""

    def __init__(self, port: int, device_id: str, secret: str) -> None:
        self.device_id = device_id
        self.connected = threading.Event()
        self.cut_at: float | None = None  # monotonic time of the first disconnect the unit did not ask for
        self.connects = 0
        self.refusals: list[int] = []
        self.acked = 0  # QoS 1 publishes the broker acknowledged
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(device_id, secret)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        wait_for(self.connected.is_set, timeout=10, what=f"{device_id} connected")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.value == 0:
            self.connects += 1
            self.connected.set()
        else:
            self.refusals.append(reason_code.value)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set() and self.cut_at is None:
            self.cut_at = time.monotonic()
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self.acked += 1

    def use(self, secret: str) -> None:
        """The credentials paho's next reconnect sends."""
        self.client.username_pw_set(self.device_id, secret)
        self.cut_at = None

    def publish_metrics(self, ts: int) -> None:
        payload = {"v": 1, "ts": ts, "cpu_percent": 1.0}
        self.client.publish(f"fleet/{self.device_id}/metrics", json.dumps(payload), qos=1)

    def wait_cut(self, since: float, timeout: float = 5.0) -> float:
        """Seconds from `since` (monotonic) to the broker closing the connection."""
        wait_for(lambda: self.cut_at is not None, timeout=timeout, what=f"{self.device_id} cut off")
        assert self.cut_at is not None
        return self.cut_at - since

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
