"""In-process consumers and publishing: how the embedded service reads and writes without an MQTT connection."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.broker.conftest import PLAIN
from tests.support.services import wait_for

pytestmark = pytest.mark.skipif(PLAIN, reason="EmbeddedBroker features, not an amqtt defect")


class Recorder:
    """A consumer that records (topic, payload, qos, retain), optionally taking its time over each message."""

    def __init__(self, delay_s: float = 0.0, fail_on: bytes | None = None) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.got: list[tuple[str, bytes, int, bool]] = []
        self._lock = threading.Lock()

    async def __call__(self, topic: str, payload: bytes | bytearray, qos: int, retain: bool) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self._lock:
            self.got.append((topic, bytes(payload), qos, retain))
        if payload == self.fail_on:
            raise RuntimeError("consumer bug")

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _, _ in self.got if t == topic]


def test_a_slow_consumer_gets_every_acknowledged_message_in_order_even_after_the_publisher_left(mqtt):
    consumer = Recorder(delay_s=0.002)
    mqtt.broker.add_consumer(consumer)
    unit = mqtt.wire("u1", will=("fleet/u1/state", b'{"v":1,"online":false}', 1, True))
    for n in range(300):
        unit.publish("fleet/u1/logs", str(n).encode(), qos=1)  # each PUBACKed before the next is sent
    unit.publish("fleet/u1/heartbeat", b"hb", qos=0)
    unit.publish("fleet/u2/logs", b"not its own topic", qos=1)  # refused by the ACL: never consumed
    unit.close()  # gone without DISCONNECT, most messages still waiting for the consumer
    wait_for(lambda: consumer.payloads("fleet/u1/state"), timeout=20, what="the Will consumed")
    assert consumer.payloads("fleet/u1/logs") == [str(n).encode() for n in range(300)]
    assert consumer.got[-2:] == [
        ("fleet/u1/heartbeat", b"hb", 0, False),
        ("fleet/u1/state", b'{"v":1,"online":false}', 1, True),
    ]  # the Will comes last
    assert consumer.payloads("fleet/u2/logs") == []


def test_a_failing_consumer_does_not_cut_the_publisher_off(mqtt):
    consumer = Recorder(fail_on=b"boom")
    mqtt.broker.add_consumer(consumer)
    unit = mqtt.wire("u1")
    for payload in (b"1", b"boom", b"2"):
        unit.publish("fleet/u1/logs", payload, qos=1)
    wait_for(lambda: len(consumer.got) == 3, what="three messages consumed")
    unit.publish("fleet/u1/logs", b"3", qos=1)
    wait_for(lambda: consumer.payloads("fleet/u1/logs")[-1:] == [b"3"], what="the unit still connected")
    mqtt.broker.remove_consumer(consumer)
    unit.publish("fleet/u1/logs", b"4", qos=1)
    subscriber = mqtt.wire("svc")
    subscriber.subscribe("fleet/+/logs")
    unit.publish("fleet/u1/logs", b"5", qos=1)
    assert subscriber.next_message(3).payload == b"5"
    assert consumer.payloads("fleet/u1/logs") == [b"1", b"boom", b"2", b"3"]


def test_in_process_publish_reaches_subscribers_later_subscribers_when_retained_and_consumers(mqtt):
    consumer = Recorder()
    mqtt.broker.add_consumer(consumer)
    unit = mqtt.wire("u1")
    assert unit.subscribe("fleet/u1/cmd") == [1]
    mqtt.call(mqtt.broker.publish("fleet/u1/cmd", b"run", qos=1))
    got = unit.next_message(3)
    assert got is not None and (got.topic, got.payload, got.qos, got.retain) == ("fleet/u1/cmd", b"run", 1, False)

    mqtt.call(mqtt.broker.publish("fleet/u1/config/desired", b"v1", qos=1, retain=True))
    mqtt.call(mqtt.broker.publish("fleet/u2/config/desired", b"for u2", qos=1, retain=True))
    assert unit.subscribe("fleet/u1/config/desired") == [1]
    got = unit.next_message(3)
    assert got is not None and (got.topic, got.payload, got.retain) == ("fleet/u1/config/desired", b"v1", True)
    assert unit.messages(0.5) == []  # another unit's retained config stays with it
    assert consumer.got == [
        ("fleet/u1/cmd", b"run", 1, False),
        ("fleet/u1/config/desired", b"v1", 1, True),
        ("fleet/u2/config/desired", b"for u2", 1, True),
    ]
    with pytest.raises(ValueError):
        mqtt.call(mqtt.broker.publish("fleet/+/cmd", b"x"))
