"""Regression tests, one per amqtt 0.12.1 defect in shared/notes/brokers.md; each fails on plain amqtt.

Run them against plain amqtt with FLEET_TEST_BROKER=plain (see conftest.py) to see them fail there.
"""

from __future__ import annotations

import json
import threading
import time

from protocol.payloads import MAX_PAYLOAD_BYTES
from tests.broker.wire_client import PUBLISH, WireClient, packet
from tests.support.services import wait_for


def _will(unit: str, qos: int = 1) -> tuple[str, bytes, int, bool]:
    return f"fleet/{unit}/state", json.dumps({"v": 1, "online": False, "session": unit}).encode(), qos, True


def test_keepalive_silent_and_stalled_clients_are_dropped_and_their_wills_fire(mqtt):
    service = mqtt.wire("svc")
    assert service.subscribe("fleet/+/state") == [1]
    pinging = mqtt.wire("u3", keepalive=2, will=_will("u3"))  # a live client that pings in time: never dropped

    silent = WireClient(mqtt.port)
    connected_at = time.monotonic()  # before CONNECT: the broker's silence clock starts at reading it
    assert silent.connect("u1", "u1", "secret-u1", keepalive=1, will=_will("u1")) == 0
    stalled = WireClient(mqtt.port)
    assert stalled.connect("u2", "u2", "secret-u2", keepalive=1, will=_will("u2")) == 0
    # Half a PUBLISH, then nothing: the broker must not wait for the rest forever.
    stalled.sock.sendall(packet(PUBLISH, 0, b"\x00\x0dfleet/u2/logs{}")[:6])

    arrived: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while not {"fleet/u1/state", "fleet/u2/state"} <= set(arrived) and time.monotonic() < deadline:
        message = service.next_message(0.2)
        pinging.ping()
        if message is not None and message.payload and not json.loads(message.payload)["online"]:
            arrived[message.topic] = time.monotonic() - connected_at
    assert set(arrived) == {"fleet/u1/state", "fleet/u2/state"}, f"Wills received: {arrived}"
    assert all(1.5 <= t <= 1.5 * 1 + 3.0 for t in arrived.values()), arrived  # 1.5 x keepalive, plus slack
    assert silent.closed_by_broker(2) and stalled.closed_by_broker(2)
    pinging.ping()  # still connected
    assert service.next_message(0.3) is None  # and no Will of it


def test_acked_qos1_messages_survive_publisher_disconnect(mqtt):
    publishers, per_publisher = 4, 2000
    received: list[tuple[str, int]] = []
    lock = threading.Lock()

    def on_message(client, userdata, message):
        with lock:
            received.append((message.topic, int(message.payload)))

    subscriber = mqtt.paho("svc-sub")
    subscriber.on_message = on_message
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *a: subscribed.set()
    subscriber.subscribe("fleet/+/logs", qos=1)
    assert subscribed.wait(10)

    def publish_then_leave(index: int) -> None:
        unit = f"p{index}"
        client = mqtt.paho(unit, max_inflight=1000)
        infos = [client.publish(f"fleet/{unit}/logs", str(i), qos=1) for i in range(per_publisher)]
        for info in infos:
            info.wait_for_publish(30)
        assert all(info.is_published() for info in infos)  # the broker PUBACKed every one
        if index % 2:
            client.disconnect()  # a clean DISCONNECT right away
            client.loop_stop()
        else:
            client.loop_stop()  # a dropped connection: no DISCONNECT
            client.socket().close()

    threads = [threading.Thread(target=publish_then_leave, args=(i,)) for i in range(publishers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        wait_for(lambda: len(received) >= publishers * per_publisher, timeout=30, what="all acknowledged messages")
    except AssertionError:
        raise AssertionError(f"{len(received)} of {publishers * per_publisher} acknowledged messages arrived") from None
    time.sleep(0.2)
    subscriber.disconnect()
    subscriber.loop_stop()
    for index in range(publishers):
        got = [n for topic, n in received if topic == f"fleet/p{index}/logs"]
        assert got == list(range(per_publisher)), f"p{index}: {len(got)} messages, in order: {got == sorted(got)}"


def test_takeover_with_clean_session_closes_the_old_connection(mqtt):
    service = mqtt.wire("svc")
    service.subscribe("fleet/+/state")
    old = mqtt.wire("u1", will=_will("u1"))
    assert old.subscribe("fleet/u1/cmd") == [1]
    new = mqtt.wire("u1")
    assert old.closed_by_broker(3), "the old connection of u1 is still open"
    will = service.next_message(3)
    assert will is not None and will.topic == "fleet/u1/state"  # a clean takeover ends the old session
    assert new.subscribe("fleet/u1/cmd") == [1]
    service.publish("fleet/u1/cmd", b'{"v":1}', qos=1)
    got = new.next_message(3)
    assert got is not None and got.topic == "fleet/u1/cmd"


def test_takeover_resuming_a_persistent_session_keeps_it_working(mqtt):
    service = mqtt.wire("svc")
    service.subscribe("fleet/+/state")
    old = mqtt.wire("u1", clean=False, will=_will("u1"))
    assert old.subscribe("fleet/u1/cmd") == [1]
    new = WireClient(mqtt.port)
    session_present, rc = new.connect_full("u1", "u1", "secret-u1", clean=False, will=_will("u1"))
    assert (session_present, rc) == (True, 0)
    assert old.closed_by_broker(3), "the old connection of u1 is still open"
    time.sleep(0.3)  # let any teardown of the old connection run
    for n in range(3):
        service.publish("fleet/u1/cmd", str(n).encode(), qos=1)
    got = [m.payload for m in new.take(3) if m.topic == "fleet/u1/cmd"]
    assert got == [b"0", b"1", b"2"]  # subscriptions resumed; the session is still connected
    assert service.next_message(0.3) is None  # resuming publishes no Will
    new.ping()


def test_wrong_password_with_a_victims_client_id_does_not_cut_the_victim_off(mqtt):
    service = mqtt.wire("svc")
    victim = mqtt.wire("u1")
    assert victim.subscribe("fleet/u1/cmd") == [1]
    attacker = WireClient(mqtt.port)
    wrong_password = attacker.connect("u1", "u1", "wrong-password")
    assert attacker.closed_by_broker(3)
    attacker = WireClient(mqtt.port)
    foreign_id = attacker.connect("u1", "u2", "secret-u2")  # u2's own credentials, u1's client id
    victim.ping()
    service.publish("fleet/u1/cmd", b"still here", qos=1)
    got = victim.next_message(3)
    assert got is not None and got.payload == b"still here"
    assert (wrong_password, foreign_id) == (4, 2)  # bad user name or password; identifier rejected


def test_delivery_qos_is_the_minimum_of_publish_and_subscription(mqtt):
    service = mqtt.wire("svc")
    assert service.subscribe("fleet/+/heartbeat", qos=1) == [1]
    assert service.subscribe("fleet/+/logs", qos=0) == [0]
    unit = mqtt.wire("u1")
    unit.publish("fleet/u1/heartbeat", b"{}", qos=0)
    unit.publish("fleet/u1/logs", b"{}", qos=1)
    got = {m.topic: m.qos for m in service.take(2)}
    assert got == {"fleet/u1/heartbeat": 0, "fleet/u1/logs": 0}


def test_retained_messages_reach_only_own_filters_the_acl_allows(mqtt):
    service = mqtt.wire("svc")
    assert service.subscribe("fleet/#") == [1]  # a broad filter known to the broker
    owner = mqtt.wire("u1")
    owner.publish("fleet/u1/state", b'{"v":1,"online":true}', qos=1, retain=True)
    service.publish("fleet/u1/config/desired", b'{"v":1,"version":1,"config":{}}', qos=1, retain=True)
    assert len(service.take(2)) == 2
    other = mqtt.wire("u2")
    assert other.messages(1.0) == []  # nothing without a subscription
    assert other.subscribe("fleet/u2/config/desired") == [1]
    assert other.messages(0.5) == []
    owner.disconnect()
    owner = mqtt.wire("u1")
    assert owner.subscribe("fleet/u1/config/desired") == [1]
    got = owner.next_message(2)
    assert got is not None and got.topic == "fleet/u1/config/desired" and got.retain


def test_oversized_payloads_are_refused_and_the_broker_keeps_working(mqtt):
    service = mqtt.wire("svc")
    service.subscribe("fleet/+/logs")
    unit = mqtt.wire("u1")
    unit.publish("fleet/u1/logs", b"x" * (MAX_PAYLOAD_BYTES + 1), qos=1)  # acknowledged, then dropped
    unit.publish("fleet/u1/logs", b"small", qos=1)
    got = service.take(1)
    assert [m.payload for m in got] == [b"small"]

    flooder = mqtt.wire("u2")
    try:
        flooder.sock.sendall(packet(PUBLISH, 0, b"\x00\x0dfleet/u2/logs" + b"y" * 5_000_000))
    except OSError:
        pass  # the broker may close the connection while we are still sending
    assert flooder.closed_by_broker(5)
    unit.publish("fleet/u1/logs", b"after", qos=1)
    got = service.next_message(3)
    assert got is not None and got.payload == b"after"
