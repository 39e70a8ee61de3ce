"""The durable outbox: order, size bound with a dropped count, acks, and surviving restarts while the broker is away."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.outbox import Outbox
from agent.store import Store
from tests.agent.conftest import fast_settings
from tests.support.services import Mosquitto, free_port, have_mosquitto, require, wait_for


def records(n: int, start: int = 0, size: int = 10) -> list[dict]:
    return [
        {"id": f"r{i}", "ts": 1, "level": "info", "source": "t", "msg": "x" * size} for i in range(start, start + n)
    ]


def test_logs_come_back_in_order_and_go_only_when_acked(tmp_path):
    store = Store(tmp_path)
    box = Outbox(store, 1 << 20)
    box.add_logs(records(5), {"file:/x": "1:10"})
    box.add_message("fleet/u/cmd/result", b"{}", retain=False)
    first = box.next_logs(0, 3, 1 << 20)
    assert [r["id"] for r in first.records] == ["r0", "r1", "r2"]
    rest = box.next_logs(first.last_seq, 10, 1 << 20)
    assert [r["id"] for r in rest.records] == ["r3", "r4"]
    box.ack_logs(first.first_seq, first.last_seq)
    assert box.pending() == (2, 1) and box.position("file:/x") == "1:10"
    store.close()
    reopened = Outbox(Store(tmp_path), 1 << 20)  # survives a restart
    assert [r["id"] for r in reopened.next_logs(0, 10, 1 << 20).records] == ["r3", "r4"]
    message = reopened.next_messages(0, 5)[0]
    reopened.ack_message(message.seq)
    assert reopened.pending() == (2, 0)


def test_a_full_outbox_drops_the_oldest_and_counts_them(tmp_path):
    box = Outbox(Store(tmp_path), 64 * 1024)
    for n in range(20):
        box.add_logs(records(10, start=n * 10, size=1000))  # ~200 KB into a 64 KB outbox
    pending = box.next_logs(0, 1000, 1 << 20)
    kept = [int(r["id"][1:]) for r in pending.records]
    assert kept == list(range(200 - len(kept), 200))  # the newest survive, in order
    assert box.dropped == 200 - len(kept) > 0
    box.ack_logs(pending.first_seq, pending.last_seq)
    assert box.pending() == (0, 0)
    assert box.dropped == 200 - len(kept)  # a running total: resending a batch can never count a drop twice


def test_batches_respect_the_byte_limit(tmp_path):
    box = Outbox(Store(tmp_path), 1 << 20)
    box.add_logs(records(10, size=1000))
    batch = box.next_logs(0, 100, 3500)
    assert len(batch.records) == 3


class PersistentService:
    """A service client with a persistent session (clean_session off), as the fleet service has."""

    def __init__(self, port: int) -> None:
        self.logs: list[dict] = []
        self.batches: list[dict] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-service-test", clean_session=False)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("fleet/+/logs", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self._lock:
            self.batches.append(body)
            self.logs.extend(body["records"])
        unit = msg.topic.split("/")[1]
        client.publish(f"fleet/{unit}/ack", json.dumps({"v": 1, "ids": [body["ack_id"]]}), qos=0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _broker(workdir: Path, port: int) -> Mosquitto:
    return Mosquitto(
        workdir=workdir,
        port=port,
        extra_config=f"allow_anonymous true\npersistence true\npersistence_location {workdir}/\n",
    ).start()


def test_logs_survive_an_agent_restart_while_the_broker_is_down(tmp_path):
    require(have_mosquitto(), "the mosquitto binary is not installed (apt install mosquitto)")
    from agent.runner import Agent

    port = free_port()
    data = tmp_path / "broker"
    broker = _broker(data, port)
    svc = PersistentService(port)  # registers its persistent subscription, then goes away with the broker
    wait_for(lambda: svc.client.is_connected(), what="service connected")
    svc.close()
    broker.stop()

    log = tmp_path / "recorder.log"
    log.write_text("")
    settings = fast_settings(
        tmp_path, f"mqtt://127.0.0.1:{port}", log_file=[str(log)], reconnect_min_delay=0.2, reconnect_max_delay=0.5
    )
    agent = Agent(settings)
    agent.start()
    second = None
    try:
        for n in range(5):
            with open(log, "a") as fh:
                fh.write(f"line {n}\n")
        wait_for(lambda: agent.outbox.pending()[0] == 5, what="5 records in the outbox")
        agent.stop()
        second = Agent(settings)
        second.start()
        with open(log, "a") as fh:
            fh.write("".join(f"line {n}\n" for n in range(5, 10)))
        wait_for(lambda: second.outbox.pending()[0] == 10, what="10 records in the outbox")

        broker = _broker(data, port)  # the broker returns with the service's session
        wait_for(lambda: second.connected, timeout=20, what="the agent to reconnect")
        assert second.outbox.pending()[0] == 10  # published, but nothing leaves before the service acknowledges
        svc = PersistentService(port)
        try:
            wait_for(lambda: second.outbox.pending() == (0, 0), timeout=20, what="the outbox to drain")
            wait_for(lambda: len(svc.logs) >= 10, timeout=15, what="10 log records at the service")
            time.sleep(0.3)  # room for a duplicate to show up
            assert [r["msg"] for r in svc.logs] == [f"line {n}" for n in range(10)]
            assert len({r["id"] for r in svc.logs}) == 10
        finally:
            svc.close()
    finally:
        (second or agent).stop()
        broker.stop()
