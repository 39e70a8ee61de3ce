"""Presence against a real Mosquitto: birth, Will, clean offline, reconnect with a new session, auth refusal."""

from __future__ import annotations

import socket
import time

from agent.connection import Connection, Hooks
from protocol.payloads import Birth, encode
from protocol.topics import Kind
from tests.agent.conftest import ANON, Service, fast_settings
from tests.support.services import Mosquitto, mosquitto_passwd, wait_for


def test_birth_is_retained_and_clean_stop_publishes_offline_with_the_same_session(broker, service, agents, tmp_path):
    agent = agents(fast_settings(tmp_path, broker.url))
    birth = service.wait("unit-1", Kind.STATE, lambda b: b["online"])[0]
    assert birth["session"] == agent.session and birth["agent_version"] and birth["ts"] > 0
    assert agent.connection.wait_connected(5)
    sock = agent.connection._client.socket()  # Nagle off: a result must not wait for the broker's delayed ACK
    assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    late = Service(broker.port)  # a subscriber arriving later still sees the retained birth
    try:
        retained = wait_for(lambda: [m for m in late.messages if m[0] == "fleet/unit-1/state"], what="retained state")
        assert retained[0][2] is True and retained[0][1]["online"] is True
    finally:
        late.close()

    agent.stop(clean=True)
    death = service.wait("unit-1", Kind.STATE, lambda b: not b["online"])[0]
    assert death["session"] == birth["session"] and death["ts"] >= birth["ts"]


def test_a_dropped_connection_fires_the_will_for_that_session(broker, service, agents, tmp_path):
    agent = agents(fast_settings(tmp_path, broker.url))
    birth = service.wait("unit-1", Kind.STATE, lambda b: b["online"])[0]
    agent.stop(clean=False)
    will = service.wait("unit-1", Kind.STATE, lambda b: not b["online"])[0]
    assert will["session"] == birth["session"]


def test_reconnects_after_a_broker_restart_with_a_new_session(tmp_path, service, broker, agents):
    agent = agents(fast_settings(tmp_path, broker.url))
    first = service.wait("unit-1", Kind.STATE, lambda b: b["online"])[0]
    broker.stop()
    wait_for(lambda: not agent.connected, what="agent notices the broker is gone")
    time.sleep(0.5)
    again = Mosquitto(workdir=tmp_path / "again", port=broker.port, extra_config=ANON).start()
    try:
        svc = Service(again.port)
        try:
            birth = svc.wait("unit-1", Kind.STATE, lambda b: b["online"], timeout=15)[0]
            assert birth["session"] != first["session"]
            svc.wait("unit-1", Kind.HEARTBEAT)  # telemetry resumes
        finally:
            svc.close()
    finally:
        agent.stop()
        again.stop()


def test_backs_off_with_jitter_and_never_gives_up_while_the_broker_is_away(tmp_path):
    settings = fast_settings(tmp_path, "mqtt://127.0.0.1:9", reconnect_min_delay=0.05, reconnect_max_delay=0.2)
    conn = Connection(settings, Hooks(birth=lambda s: b"{}"), [])
    delays = [conn._delay(n) for n in range(12)]
    assert all(0.025 <= d <= 0.2 for d in delays)
    assert max(delays[6:]) <= 0.2 and len(set(delays)) > 6  # capped, and jittered
    conn.start()
    try:
        time.sleep(1.0)
        assert conn._thread is not None and conn._thread.is_alive() and not conn.connected
    finally:
        conn.stop(timeout=3)
    assert not conn._thread.is_alive()


def test_bad_credentials_stop_the_retry_storm(mosquitto_factory, tmp_path):
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, {"unit-1": "right"})
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pw}\n")
    settings = fast_settings(
        tmp_path, broker.url, secret="wrong", reconnect_min_delay=0.05, reconnect_max_delay=0.1, auth_retry_delay=30
    )
    attempts = []
    conn = Connection(settings, Hooks(birth=lambda s: encode(Birth(ts=1, session=s))), [])
    original = conn._client.connect
    conn._client.connect = lambda *a, **k: (attempts.append(time.monotonic()), original(*a, **k))[1]
    conn.start()
    try:
        wait_for(lambda: conn.auth_refused, what="the refusal to be noticed")
        time.sleep(1.5)
        assert len(attempts) == 1, "a refused unit must not hammer the broker"
        assert not conn.connected and conn._thread.is_alive()
    finally:
        conn.stop(timeout=3)
    assert "wrong" not in broker.log()
