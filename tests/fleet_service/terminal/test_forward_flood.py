"""A unit's server that sends as fast as it can through a port forward nobody reads, and a client that sends to a
server that does not read: neither the agent nor the service holds more than the session's window."""

from __future__ import annotations

import os
import socket
import threading
import time

import psutil
import pytest
from websockets.sync.client import connect

from tests.fleet_service.terminal.support import AUTH, forward_url
from tests.fleet_service.terminal.test_terminal_flood import Peak

MB = 1024 * 1024


class Firehose:
    """Loopback server: on each connection, either write without end (`send`) or accept and never read."""

    def __init__(self, send: bool) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.send = send
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.send:
                threading.Thread(target=self._pour, args=(conn,), daemon=True).start()

    def _pour(self, conn: socket.socket) -> None:
        block = os.urandom(64 * 1024)
        try:
            while True:
                conn.sendall(block)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_a_flood_from_the_unit_stays_within_the_window(fleet, agents):
    hose = Firehose(send=True)
    proc = agents(fleet, "fwd-flood", "--allow-remote-port", str(hose.port))
    hub = fleet.stack.ctx.terminals
    try:
        url = forward_url(fleet.stack.url, "fwd-flood", hose.port)
        with connect(url, additional_headers=AUTH, max_size=None) as ws:
            first = ws.recv(timeout=15)
            session = next(iter(hub.sessions.values()))
            watched = {"agent": psutil.Process(proc.pid), "service": psutil.Process()}
            if fleet.mosquitto is not None:
                watched["broker"] = psutil.Process(fleet.mosquitto.broker.proc.pid)
            peak = Peak(**watched)

            # Nobody reads: the flow stops once a window (and what the sockets hold) is out.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                assert session.received - session.consumed <= hub.window
                peak.sample()
                time.sleep(0.2)
            held = session.received
            time.sleep(1.5)
            assert session.received == held, "the unit kept sending while nobody read"

            # The client reads as fast as it can: megabytes flow, within the window at every moment.
            start, moved = session.consumed, len(first)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                moved += len(ws.recv(timeout=5))
                assert session.received - session.consumed <= hub.window
                peak.sample()
            assert session.consumed - start > 4 * MB, f"only {session.consumed - start} bytes passed in 5 s"
    finally:
        hose.close()
    print(f"moved {moved} bytes; peak RSS growth {peak.growth}")
    assert peak.growth["agent"] < 12 * MB, peak.growth
    assert peak.growth["service"] < 64 * MB, peak.growth
    assert peak.growth.get("broker", 0) < 32 * MB, peak.growth


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_a_client_sending_to_a_server_that_does_not_read_is_held_back(fleet, agents):
    hose = Firehose(send=False)
    proc = agents(fleet, "fwd-sink", "--allow-remote-port", str(hose.port))
    hub = fleet.stack.ctx.terminals
    peak = Peak(agent=psutil.Process(proc.pid))
    sent = 0
    try:
        ws = connect(forward_url(fleet.stack.url, "fwd-sink", hose.port), additional_headers=AUTH)
        stop = threading.Event()

        def pour() -> None:
            nonlocal sent
            block = os.urandom(64 * 1024)
            try:
                while not stop.is_set():
                    ws.send(block)
                    sent += len(block)
            except Exception:  # noqa: BLE001 - the socket closes at the end
                pass

        threading.Thread(target=pour, daemon=True).start()
        time.sleep(6)
        session = next(iter(hub.sessions.values()))
        delivered = session.bytes_in
        peak.sample()
        time.sleep(1.5)
        assert session.bytes_in == delivered, "the service kept sending to a unit that could not write"
        stop.set()
        ws.close()
    finally:
        hose.close()
    print(f"client sent {sent} bytes, {delivered} reached the unit; agent RSS growth {peak.growth}")
    assert sent < 40 * MB, "nothing held the client back"
    assert peak.growth["agent"] < 12 * MB, peak.growth
