"""The agent's local relay bridge against a real Mosquitto and real WebSocket clients on its loopback port."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from protocol.topics import Kind, topic
from tests.agent.conftest import fast_settings
from tests.support.services import free_port, wait_for, wait_port


def _local(port: int, **kwargs) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}/", open_timeout=5, **kwargs)


def _down(service, payload: bytes, device_id: str = "unit-1") -> None:
    service.client.publish(topic(device_id, Kind.RELAY_DOWN), payload, qos=1).wait_for_publish(5)


def _close_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=5)
    return closed.value.rcvd.code


@pytest.fixture
def bridged(broker, service, agents, tmp_path):
    """An agent with its relay bridge on a free loopback port, online at the broker."""
    port = free_port()
    agent = agents(fast_settings(tmp_path, broker.url, relay_port=port, relay_origin=["https://recorder.example"]))
    service.wait("unit-1", Kind.STATE, lambda b: b["online"])  # its relay/down subscription came first
    wait_port(port)
    return agent, port


def test_relay_down_reaches_every_local_client_and_their_messages_go_to_relay_up(bridged, service):
    agent, port = bridged
    with _local(port) as a, _local(port) as b:
        wait_for(lambda: agent.relay.client_count == 2, what="two local clients")
        offer = json.dumps({"type": "offer", "sdp": "v=0 from a controller"})
        _down(service, offer.encode())
        assert a.recv(timeout=5) == offer
        assert b.recv(timeout=5) == offer

        _down(service, b"\xff\x00raw")  # not UTF-8: passed on unchanged as a binary frame
        assert a.recv(timeout=5) == b"\xff\x00raw"
        assert b.recv(timeout=5) == b"\xff\x00raw"

        a.send(json.dumps({"type": "answer", "sdp": "v=0 from the recorder"}))
        b.send(json.dumps({"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}))
        ups = service.wait("unit-1", Kind.RELAY_UP, count=2)
        assert sorted(u["type"] for u in ups) == ["answer", "candidate"]
        assert not [m for m in service.messages if m[0] == topic("unit-1", Kind.RELAY_UP) and m[2]]  # not retained
    wait_for(lambda: agent.relay.client_count == 0, what="clients gone")
    assert agent.connected  # the bridge never disturbed the MQTT link


def test_local_limits_close_with_their_own_codes(bridged, service):
    agent, port = bridged
    with _local(port) as ws:
        ws.send("x" * (64 * 1024 + 1))
        assert _close_code(ws) == 1009  # over protocol.payloads.MAX_RELAY_BYTES

    with _local(port) as ws:
        started = time.monotonic()
        for n in range(2000):  # past the per-connection burst of 40 (refilled at 20/s)
            try:
                ws.send(json.dumps({"n": n}))
            except ConnectionClosed:
                break
        assert _close_code(ws) == 4429
        flood_s = time.monotonic() - started
    ups = service.wait("unit-1", Kind.RELAY_UP, count=40)
    assert len(ups) < 40 + 20 * flood_s + 10  # the burst (and its refill) went through, the flood did not

    # Polled, not timed: a loaded machine may take a while to run the handlers that notice the close.
    wait_for(lambda: agent.relay.client_count == 0, timeout=30, what="the closed clients to leave the bridge")
    clients = [_local(port) for _ in range(agent.relay.max_clients)]
    try:
        wait_for(lambda: agent.relay.client_count == len(clients), what="bridge full")
        with pytest.raises(InvalidStatus) as refused:
            _local(port)
        assert refused.value.response.status_code == 503
    finally:
        for c in clients:
            c.close()


def test_only_loopback_hosts_and_allowed_origins(bridged):
    _, port = bridged
    # DNS rebinding: a page that resolved its own name to 127.0.0.1 still sends its own Host.
    r = httpx.get(f"http://127.0.0.1:{port}/turn-credentials", headers={"Host": f"evil.example:{port}"})
    assert r.status_code == 403 and "127.0.0.1" in r.json()["detail"]
    with pytest.raises(InvalidStatus) as refused:
        _local(port, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:8080", "https://recorder.example"):
        with _local(port, origin=origin) as ws:
            ws.ping().wait(5)

    assert httpx.get(f"http://127.0.0.1:{port}/nope").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 426  # the relay itself wants a WebSocket
    r = httpx.get(f"http://localhost:{port}/turn-credentials")  # no api_url on this agent
    assert r.status_code == 503 and "api_url" in r.json()["detail"]


def test_a_broker_outage_closes_local_clients_that_send_with_4503(bridged, broker):
    agent, port = bridged
    with _local(port) as ws:
        broker.stop()
        wait_for(lambda: not agent.connected, what="agent notices the broker is gone")
        ws.send('{"type":"answer"}')
        assert _close_code(ws) == 4503
    with _local(port) as ws:  # the bridge itself stays up for the next attempt
        ws.ping().wait(5)


def test_stop_closes_local_clients_and_frees_the_port(bridged):
    agent, port = bridged
    with _local(port) as ws:
        wait_for(lambda: agent.relay.client_count == 1, what="client attached")
        agent.stop(clean=True, timeout=3)
        assert _close_code(ws) == 1001
    with socket.create_server(("127.0.0.1", port)):
        pass


def test_port_zero_disables_and_a_busy_port_does_not_stop_the_agent(broker, service, agents, tmp_path, caplog):
    off = agents(fast_settings(tmp_path, broker.url, device_id="unit-off", relay_port=0))
    assert off.relay is None and topic("unit-off", Kind.RELAY_DOWN) not in off.connection.subscriptions

    with socket.create_server(("127.0.0.1", 0)) as busy, caplog.at_level(logging.ERROR, "agent.relay_bridge"):
        port = busy.getsockname()[1]
        agent = agents(fast_settings(tmp_path, broker.url, device_id="unit-busy", relay_port=port))
        service.wait("unit-busy", Kind.STATE, lambda b: b["online"])
        assert agent.connected
        assert f"cannot listen on 127.0.0.1:{port}" in caplog.text


def test_websockets_is_imported_only_when_a_local_client_connects(tmp_path):
    """An agent whose recorder never connects does not pay for the websockets package (idle footprint)."""
    port = free_port()
    program = textwrap.dedent(f"""
        import sys
        from websockets.sync.client import connect  # the client side only, to have something to connect with
        loaded = {{m for m in sys.modules if m.startswith("websockets.")}}
        from agent.config import load_settings
        from agent.runner import Agent
        agent = Agent(load_settings(None, device_id="lazy-1", broker_url="mqtt://127.0.0.1:9", secret="s",
                                    state_dir={str(tmp_path / "state")!r}, relay_port={port}))
        agent.start()
        assert "websockets.sync.server" not in sys.modules, "imported before any client"
        assert "agent.relay_clients" not in sys.modules and "agent.turn_fetch" not in sys.modules
        with connect("ws://127.0.0.1:{port}/", open_timeout=5) as ws:
            ws.ping().wait(5)
        assert "websockets.sync.server" in sys.modules
        agent.stop(clean=False, timeout=3)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_client_gone_before_it_is_served_takes_no_slot():
    """Seen in CI: a local client that vanished between the handshake and its handler made `remote_address`
    raise, after the handler had counted it and before the cleanup that uncounts it, so the slot was lost for
    good (enough of them and the bridge refuses every recorder with 503)."""
    import threading

    from agent.relay_clients import _serve

    class Gone:
        @property
        def remote_address(self):
            raise OSError(9, "Bad file descriptor")

        def __iter__(self):
            return iter(())

        def close(self, *args) -> None:
            pass

    class Bridge:
        lock = threading.Lock()
        clients: set = set()
        max_clients = 4
        stopping = threading.Event()

    bridge = Bridge()
    for _ in range(10):
        _serve(bridge, Gone())  # type: ignore[arg-type]
    assert bridge.clients == set()
