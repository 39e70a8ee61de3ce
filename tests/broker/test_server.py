"""EmbeddedBroker as a component: ports, listeners, sessions, shared subscriptions, the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from broker import BrokerError, EmbeddedBroker, StaticCredentialStore, load_settings
from protocol.ids import SERVICE_USERNAME
from tests.broker.conftest import PLAIN, SERVICE_SECRET
from tests.broker.wire_client import WireClient, packet
from tests.support.services import require, wait_port

UNSUBSCRIBE = 10

pytestmark = pytest.mark.skipif(PLAIN, reason="EmbeddedBroker features, not an amqtt defect")
REPO = Path(__file__).resolve().parents[2]


def test_port_zero_binds_a_free_port_and_reports_it(start_broker):
    first, second = start_broker(), start_broker()
    assert first.port and second.port and first.port != second.port
    first.wire("svc").ping()


def test_a_busy_port_is_a_broker_error(start_broker):
    running = start_broker()

    async def clash() -> None:
        settings = load_settings(mqtt_host="127.0.0.1", mqtt_port=running.port)
        await EmbeddedBroker(settings, StaticCredentialStore(None)).start()

    with pytest.raises(BrokerError, match="could not start"):
        running.call(clash())


def test_websocket_listener_serves_mqtt(start_broker):
    running = start_broker(ws_port=0)
    ws_port = running.broker.ws_port
    got = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="svc-ws", transport="websockets")
    client.username_pw_set(SERVICE_USERNAME, SERVICE_SECRET)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("fleet/+/logs", 1)
    client.on_subscribe = lambda c, u, mid, rcs, p: c.publish("fleet/u1/logs", b"over ws", 1)
    client.on_message = lambda c, u, m: got.set()
    client.connect("127.0.0.1", ws_port)
    client.loop_start()
    try:
        assert got.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_tls_listener_serves_mqtts(start_broker, tmp_path):
    require(shutil.which("openssl") is not None, "openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    running = start_broker(mqtts_port=0, tls_certfile=str(cert), tls_keyfile=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    raw = socket.create_connection(("127.0.0.1", running.broker.mqtts_port), timeout=10)
    client = WireClient(0, sock=context.wrap_socket(raw, server_hostname="127.0.0.1"))
    assert client.connect("svc", SERVICE_USERNAME, SERVICE_SECRET) == 0
    client.ping()
    with pytest.raises(BrokerError, match="invalid"):
        running.call(
            EmbeddedBroker(
                load_settings(tls_certfile="/nonexistent", tls_keyfile="/nonexistent"), StaticCredentialStore(None)
            ).start()
        )


def test_persistent_service_session_gets_what_was_queued_while_away(start_broker):
    running = start_broker(max_queued_messages=3)
    service = running.wire("svc-persist", clean=False)
    assert service.subscribe("fleet/+/logs") == [1]
    service.disconnect()
    unit = running.wire("u1")
    for n in range(5):
        unit.publish("fleet/u1/logs", str(n).encode(), qos=1)
    unit.publish("fleet/u1/heartbeat", b"qos0 is not queued", qos=0)
    service = WireClient(running.port)
    assert service.connect_full("svc-persist", SERVICE_USERNAME, SERVICE_SECRET, clean=False) == (True, 0)
    got = service.take(3)
    assert [(m.payload, m.retain) for m in got] == [(b"2", False), (b"3", False), (b"4", False)]  # oldest dropped


def test_unacknowledged_messages_stay_in_a_bounded_window_and_survive_a_drop(start_broker):
    running = start_broker(max_inflight_messages=5)
    service = running.wire("svc-persist", clean=False)
    assert service.subscribe("fleet/+/logs") == [1]
    service.auto_ack = False
    unit = running.wire("u1")
    for n in range(20):
        unit.publish("fleet/u1/logs", str(n).encode(), qos=1)
    first = service.take(5, grace=0.5)
    assert [m.payload for m in first] == [str(n).encode() for n in range(5)]  # the window, unacknowledged
    service.ack(first[0].packet_id)
    assert [m.payload for m in service.take(1)] == [b"5"]  # one acknowledged, one more sent
    service.close()  # dropped with 5 unacknowledged and 14 waiting
    time.sleep(0.3)
    service = WireClient(running.port)
    assert service.connect_full("svc-persist", SERVICE_USERNAME, SERVICE_SECRET, clean=False) == (True, 0)
    got = [int(m.payload) for m in service.take(19)]
    assert got == list(range(1, 20))


def test_shared_subscription_delivers_each_message_to_one_member(start_broker):
    running = start_broker()
    members = [running.wire(f"svc-{n}") for n in range(2)]
    for member in members:
        assert member.subscribe("$share/ingest/fleet/+/logs") == [1]
    unit = running.wire("u1")
    for n in range(20):
        unit.publish("fleet/u1/logs", str(n).encode(), qos=1)
    shares: list[list[int]] = [[], []]
    deadline = time.monotonic() + 10
    while len(shares[0]) + len(shares[1]) < 20 and time.monotonic() < deadline:
        for share, member in zip(shares, members, strict=True):
            share += [int(m.payload) for m in member.messages(0.1)]
    for share, member in zip(shares, members, strict=True):
        share += [int(m.payload) for m in member.messages(0.2)]
    assert sorted(shares[0] + shares[1]) == list(range(20))
    assert shares[0] and shares[1]


def test_disconnect_drops_a_client_like_a_network_failure(mqtt):
    service = mqtt.wire("svc")
    service.subscribe("fleet/+/state")
    unit = mqtt.wire("u1", will=("fleet/u1/state", b'{"v":1,"online":false}', 1, False))
    assert mqtt.call(mqtt.broker.disconnect("u1")) is True
    assert unit.closed_by_broker(3)
    will = service.next_message(3)
    assert will is not None and will.payload == b'{"v":1,"online":false}'
    assert mqtt.call(mqtt.broker.disconnect("nobody")) is False


def test_cli_runs_the_broker_until_sigterm(tmp_path):
    script = (
        "import argparse, sys\n"
        "from broker import cli\n"
        "parser = argparse.ArgumentParser(prog='fleet')\n"
        "cli.register(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    env = {**os.environ, "FLEET_SERVICE_SECRET": "cli-secret", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            "broker",
            "--mqtt-port",
            "0",
            "--host",
            "127.0.0.1",
            "--database-url",
            f"sqlite:///{tmp_path / 'fleet.db'}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("MQTT broker listening on port "), line + proc.stderr.read()
        port = int(line.rsplit(" ", 1)[1])
        wait_port(port)
        client = WireClient(port)
        assert client.connect("svc", SERVICE_USERNAME, "cli-secret") == 0
        assert WireClient(port).connect("u1", "u1", "no-such-unit") == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "cli-secret" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_settings_come_from_fleet_environment(monkeypatch):
    monkeypatch.setenv("FLEET_MQTT_PORT", "2883")
    monkeypatch.setenv("FLEET_SERVICE_SECRET", "from-env")
    settings = load_settings(mqtt_host="127.0.0.1")
    assert settings.mqtt_port == 2883 and settings.mqtt_host == "127.0.0.1"
    assert "from-env" not in repr(settings) and settings.service_secret.get_secret_value() == "from-env"
    assert load_settings(mqtt_port=1884).mqtt_port == 1884  # an explicit value beats the environment
    with pytest.raises(ValueError):
        load_settings(tls_certfile="cert.pem")  # a certificate needs its key


def test_resubscribing_replaces_the_qos_and_unsubscribing_stops_delivery(mqtt):
    service = mqtt.wire("svc")
    assert service.subscribe("fleet/+/logs", qos=1) == [1]
    assert service.subscribe("fleet/+/logs", qos=0) == [0]
    unit = mqtt.wire("u1")
    unit.publish("fleet/u1/logs", b"a", qos=1)
    assert [(m.payload, m.qos) for m in service.take(1)] == [(b"a", 0)]
    service.sock.sendall(packet(UNSUBSCRIBE, 2, b"\x00\x07" + b"\x00\x0cfleet/+/logs"))
    service.ping()
    unit.publish("fleet/u1/logs", b"b", qos=1)
    assert service.messages(0.5) == []
