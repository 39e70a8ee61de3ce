"""The service's own MQTT connection, against a real Mosquitto (and a fake broker for what Mosquitto never does)."""

from __future__ import annotations

import asyncio
import random
import threading

import paho.mqtt.client as mqtt
import pytest

from fleet_service.broker_link import wire
from fleet_service.broker_link.client import Connection, ConnectionLost, Refused
from tests.support.services import free_port, mosquitto_passwd, wait_for

SECRET = "client-test-secret"


@pytest.fixture
def broker(mosquitto_factory, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    mosquitto_passwd(passwd, {"svc": SECRET, "unit": SECRET})
    # as deployed for scale (docs/scaling.md): many messages in flight to the service
    return mosquitto_factory(f"allow_anonymous false\npassword_file {passwd}\nmax_inflight_messages 1000\n")


def paho_client(port: int, name: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    client.username_pw_set("unit", SECRET)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_numbered(port: int, topic: str, count: int, qos: int = 1, pad: int = 0) -> None:
    client = paho_client(port, "pub")
    try:
        infos = [client.publish(topic, str(i).encode() + b" " * pad, qos=qos) for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


async def opened(port: int, client_id: str = "svc-1", **kw) -> tuple[Connection, bool]:
    conn = Connection(**kw)
    present = await conn.open("127.0.0.1", port, client_id, username="svc", password=SECRET, keepalive=30)
    return conn, present


async def take_until(conn: Connection, count: int, timeout: float = 20.0) -> list[tuple[str, bytes, bool]]:
    got: list[tuple[str, bytes, bool]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got.extend(await conn.take())
    return got


# -- packets -------------------------------------------------------------------------------------------------


def test_the_reader_cuts_packets_however_the_bytes_are_split():
    stream = b"".join(
        [
            bytes((wire.CONNACK << 4, 2, 0, 0)),
            wire.publish("fleet/u1/logs", b"a" * 300, qos=1, retain=False, packet_id=7),  # two length bytes
            wire.publish("fleet/u1/state", b"", qos=0, retain=True),
            bytes((wire.PUBREL << 4 | 2, 2, 0, 9)),
            bytes((wire.SUBACK << 4, 3, 0, 1, 1)),
            bytes((wire.PINGRESP << 4, 0)),
        ]
    )
    rng = random.Random(4)
    for _ in range(50):
        reader = wire.Reader()
        messages, control, acks = [], [], b""
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 40)
            m, c, a = reader.feed(stream[pos : pos + step])
            messages += m
            control += c
            acks += a
            pos += step
        assert messages == [("fleet/u1/logs", b"a" * 300, False), ("fleet/u1/state", b"", True)]
        assert [p.kind for p in control] == [wire.CONNACK, wire.SUBACK, wire.PINGRESP]
        assert acks == wire.puback(7) + wire.pubcomp(9)


@pytest.mark.parametrize(
    "garbage, says",
    [
        (bytes((0xF0, 0)), "packet type 15"),
        (bytes((0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)), "longer than four bytes"),
        (bytes((0x32, 3, 0, 9, 0x61)), "malformed PUBLISH"),
        (bytes((0x30, 4, 0, 2, 0xFF, 0xFE)), "not UTF-8"),
        (bytes((0x30, 0x80, 0x80, 0x04)), "over the limit"),
    ],
)
def test_bytes_that_are_not_mqtt_are_refused(garbage, says):
    with pytest.raises(wire.ProtocolViolation, match=says):
        wire.Reader(max_packet=1024).feed(garbage)


# -- a real broker -------------------------------------------------------------------------------------------


def test_messages_arrive_in_order_and_publishes_are_acknowledged(broker):
    async def main():
        conn, _ = await opened(broker.port)
        await conn.subscribe(["fleet/+/logs"], qos=1)
        sender = threading.Thread(target=publish_numbered, args=(broker.port, "fleet/u1/logs", 5000))
        sender.start()
        got = await take_until(conn, 5000)
        sender.join()
        assert [int(p) for _, p, _ in got] == list(range(5000))  # none lost, none doubled, in order
        assert {t for t, _, _ in got} == {"fleet/u1/logs"}

        seen: list[bytes] = []
        listener = paho_client(broker.port, "listener")
        listener.on_message = lambda c, u, m: seen.append(m.payload)
        listener.subscribe("fleet/u1/cmd", qos=1)
        await asyncio.sleep(0.3)
        for i in range(200):
            await conn.publish("fleet/u1/cmd", f"c{i}".encode(), qos=1)
        await asyncio.to_thread(wait_for, lambda: len(seen) == 200, 10.0)
        assert seen == [f"c{i}".encode() for i in range(200)]
        listener.loop_stop()
        conn.close()

    asyncio.run(main())


def test_a_wrong_password_is_refused_with_its_reason(broker):
    async def main():
        conn = Connection()
        with pytest.raises(Refused, match="bad user name or password|not authorized") as refused:
            await conn.open("127.0.0.1", broker.port, "svc-x", username="svc", password="wrong", keepalive=30)
        assert refused.value.credentials

    asyncio.run(main())


def test_the_session_keeps_what_arrived_while_the_service_was_away(broker):
    async def main():
        conn, _ = await opened(broker.port, "svc-session")
        await conn.subscribe(["fleet/+/logs"], qos=1)
        conn.close()
        await asyncio.to_thread(publish_numbered, broker.port, "fleet/u2/logs", 300)
        again, present = await opened(broker.port, "svc-session")
        assert present
        got = await take_until(again, 300)
        assert [int(p) for _, p, _ in got] == list(range(300))
        again.close()

    asyncio.run(main())


def test_a_consumer_that_falls_behind_stops_the_reading_not_the_memory(broker):
    async def main():
        conn, _ = await opened(broker.port, inbox_max=100)
        await conn.subscribe(["fleet/+/logs"], qos=1)
        sender = threading.Thread(target=publish_numbered, args=(broker.port, "fleet/u3/logs", 3000))
        sender.start()
        most = 0
        for _ in range(40):  # nobody takes for 2 s: the connection stops reading at the limit
            await asyncio.sleep(0.05)
            most = max(most, conn.pending())
        assert 100 <= most < 100 + 1000, most  # the limit plus what one read can hold
        got = await take_until(conn, 3000)
        sender.join()
        assert [int(p) for _, p, _ in got] == list(range(3000))
        conn.close()

    asyncio.run(main())


def test_a_killed_broker_hands_over_what_arrived_then_fails_every_waiter(broker):
    async def main():
        conn, _ = await opened(broker.port)
        await conn.subscribe(["fleet/+/logs"], qos=1)
        await asyncio.to_thread(publish_numbered, broker.port, "fleet/u4/logs", 50)
        await asyncio.sleep(0.5)
        broker.proc.kill()
        got = await take_until(conn, 50)
        assert len(got) == 50
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(conn.take(), 5)
        with pytest.raises(ConnectionLost):
            await conn.publish("fleet/u4/cmd", b"x", qos=1)

    asyncio.run(main())


# -- a fake broker: what Mosquitto never does ----------------------------------------------------------------


async def fake_broker(after_connack: bytes) -> tuple[asyncio.Server, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(bytes((wire.CONNACK << 4, 2, 0, 0)))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(after_connack)
        await writer.drain()
        await reader.read()  # then silent until the client goes

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_broker_that_goes_silent_is_dropped_after_one_and_a_half_keepalives():
    async def main():
        server, port = await fake_broker(b"")
        conn = Connection()
        await conn.open("127.0.0.1", port, "svc", username="svc", password="x", keepalive=1)
        started = asyncio.get_running_loop().time()
        error = await asyncio.wait_for(conn.wait_closed(), 5)
        assert "stopped answering" in str(error)
        assert 1.4 <= asyncio.get_running_loop().time() - started <= 3.0
        server.close()

    asyncio.run(main())


def test_garbage_from_the_broker_ends_the_connection_with_the_reason():
    async def main():
        server, port = await fake_broker(bytes((0xF0, 0)))
        conn = Connection()
        await conn.open("127.0.0.1", port, "svc", username="svc", password="x", keepalive=30)
        error = await asyncio.wait_for(conn.wait_closed(), 5)
        assert "protocol violation" in str(error) and "packet type 15" in str(error)
        server.close()

    asyncio.run(main())


def test_a_session_backlog_larger_than_the_inbox_is_drained_through_the_link(broker):
    """The broker sends a persistent session's backlog right after CONNACK, ahead of SUBACK: the link consumes
    while it subscribes. A link that waited for SUBACK first would see its connection stop reading at the inbox
    limit with SUBACK unread, time out, and drop what it had received (a small inbox makes that certain here)."""
    from fleet_service.broker_link.mqtt import MqttLink
    from fleet_service.prometheus import Registry
    from fleet_service.settings import BrokerTarget

    async def main():
        conn, _ = await opened(broker.port, "svc-backlog")
        await conn.subscribe(["fleet/+/logs"], qos=1)
        conn.close()
        await asyncio.to_thread(publish_numbered, broker.port, "fleet/u5/logs", 30_000, 1, 180)
        got: list[bytes] = []

        async def handle(name: str, payload: bytes, retained: bool) -> None:
            got.append(payload)
            if len(got) % 1000 == 0:
                await asyncio.sleep(0.01)  # a consumer slower than the wire

        target = BrokerTarget(f"mqtt://svc:{SECRET}@127.0.0.1:{broker.port}")
        link = MqttLink(target, "svc-backlog", ["fleet/+/logs"], handle, Registry(), inbox_max=50)
        task = asyncio.create_task(link.run())
        async with asyncio.timeout(30):
            while len(got) < 30_000:
                await asyncio.sleep(0.05)
        assert link.connections == 1  # one connection: no timeout, no reconnect
        assert [int(p) for p in got] == list(range(30_000))  # int() ignores the padding
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_large_messages_stop_the_reading_by_their_bytes(broker):
    async def main():
        conn, _ = await opened(broker.port, inbox_max_bytes=1024 * 1024)
        await conn.subscribe(["fleet/+/logs"], qos=1)
        sender = threading.Thread(target=publish_numbered, args=(broker.port, "fleet/u6/logs", 200, 1, 100_000))
        sender.start()
        most = 0
        for _ in range(40):
            await asyncio.sleep(0.05)
            most = max(most, conn.pending())
        assert 10 <= most <= 10 + 3, most  # 1 MiB is ten of them, plus what one read holds
        got = await take_until(conn, 200)
        sender.join()
        assert [int(p) for _, p, _ in got] == list(range(200))
        conn.close()

    asyncio.run(main())


def test_the_connection_over_tls_checks_the_brokers_certificate(mosquitto_factory, tmp_path):
    """mqtts:// links (a broker on another host): messages flow over TLS, and a certificate the service does
    not trust is refused."""
    import ssl

    from tests.support.smtp import make_certificate

    cert = make_certificate(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    mosquitto_passwd(passwd, {"svc": SECRET, "unit": SECRET})
    tls_port = free_port()
    broker = mosquitto_factory(  # its plain listener for the publisher, a TLS one for the service
        f"allow_anonymous false\npassword_file {passwd}\n"
        f"listener {tls_port} 127.0.0.1\ncertfile {cert.cert}\nkeyfile {cert.key}\n"
    )

    async def main():
        trusting = ssl.create_default_context(cafile=str(cert.cert))
        conn = Connection()
        await conn.open("localhost", tls_port, "svc-tls", username="svc", password=SECRET, keepalive=30, tls=trusting)
        await conn.subscribe(["fleet/+/logs"], qos=1)
        await asyncio.to_thread(publish_numbered, broker.port, "fleet/u7/logs", 100)
        got = await take_until(conn, 100)
        assert [int(p) for _, p, _ in got] == list(range(100))
        conn.close()
        with pytest.raises(ConnectionLost, match="certificate"):
            await Connection().open(
                "localhost", tls_port, "svc-tls2", username="svc", password=SECRET, tls=ssl.create_default_context()
            )

    asyncio.run(main())
