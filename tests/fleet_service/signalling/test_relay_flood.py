"""A unit flooding `relay/up` costs the service a few log lines a minute, not one per message."""

from __future__ import annotations

import base64
import logging
import os
import socket
import time
from contextlib import contextmanager

import pytest

from protocol.payloads import MAX_RELAY_BYTES
from protocol.topics import Kind
from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN
from tests.support.unit import RawUnit

FLOOD = 600


def _metric(fleet, name: str, label: str) -> float:
    for line in fleet.api.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _relay_drops(fleet, reason: str) -> float:
    return _metric(fleet, "fleet_relay_dropped_total", f'reason="{reason}"')


def _records(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("fleet_service") and r.levelno >= logging.WARNING and "relay" in r.getMessage()
    ]


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_a_relay_up_flood_is_logged_a_few_times_per_unit_and_counted(fleet, caplog):
    caplog.set_level(logging.INFO, logger="fleet_service")
    secrets = {d: fleet.enroll(d) for d in ("cam-flood", "cam-other")}
    units = {d: RawUnit(fleet.mqtt_port, d, s).connect() for d, s in secrets.items()}
    for unit in units.values():
        unit.birth()
    wait_for(lambda: all(fleet.status(d)["online"] for d in units), what="units online")

    # Oversized messages: every one is dropped; the log says so once per unit, and counts the rest.
    big = b"x" * (MAX_RELAY_BYTES + 1)
    for _ in range(FLOOD):
        units["cam-flood"].publish(Kind.RELAY_UP, big)
    units["cam-other"].publish(Kind.RELAY_UP, big)
    # (the service without the throttle logged each message: wait for either)
    wait_for(
        lambda: _relay_drops(fleet, "too_large") >= FLOOD + 1 or len(_records(caplog)) >= FLOOD + 1,
        timeout=30,
        what="every oversized message handled",
    )
    lines = _records(caplog)
    assert len(lines) <= 2, f"{len(lines)} log lines, e.g. {lines[-1].getMessage()}"  # one per unit per minute
    assert _relay_drops(fleet, "too_large") == FLOOD + 1
    assert "suppressed" not in lines[0].getMessage()
    assert {"cam-flood", "cam-other"} <= {w for r in lines for w in r.getMessage().replace(",", " ").split()}

    # A controller that stops reading: its socket's buffers fill, then its queue; later messages are dropped,
    # logged once and counted.
    with _silent_controller(fleet, "cam-flood"):
        wait_for(lambda: fleet.api.get("/api/relay/health").json()["controllers"] == 1, what="controller attached")
        caplog.clear()
        chunk = b"y" * (MAX_RELAY_BYTES - 100)
        for _ in range(FLOOD):
            units["cam-flood"].publish(Kind.RELAY_UP, chunk)
        wait_for(
            lambda: _metric(fleet, "fleet_relay_messages_total", 'direction="up"') >= FLOOD,
            timeout=30,
            what="every message relayed or dropped",
        )
        lines = _records(caplog)
        assert len(lines) <= 1, f"{len(lines)} log lines, e.g. {lines[-1].getMessage()}"
        assert _relay_drops(fleet, "controller_full") >= FLOOD - 256 - 100  # the socket's buffers hold a few
    for unit in units.values():
        unit.kill()


@contextmanager
def _silent_controller(fleet, device_id: str):
    """A relay WebSocket whose client completes the handshake and then never reads again."""
    port = int(fleet.stack.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # small and fixed (no autotuning to 32 MB)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /api/devices/{device_id}/relay HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    try:
        yield sock
    finally:
        sock.close()


def test_the_next_line_after_the_quiet_interval_says_how_many_were_not_logged(caplog):
    from fleet_service.prometheus import Registry
    from fleet_service.signalling.relay import DropLog

    caplog.set_level(logging.WARNING, logger="fleet_service.signalling.relay")
    registry = Registry()
    drops = DropLog(registry, interval_s=0.2)
    for _ in range(50):
        drops.drop("cam-1", "too_large", "relay message from %s dropped", "cam-1")
    drops.drop("cam-2", "too_large", "relay message from %s dropped", "cam-2")
    assert [r.getMessage() for r in caplog.records] == [
        "relay message from cam-1 dropped",
        "relay message from cam-2 dropped",
    ]
    time.sleep(0.25)
    drops.drop("cam-1", "too_large", "relay message from %s dropped", "cam-1")
    assert (
        caplog.records[-1].getMessage()
        == "relay message from cam-1 dropped (49 more since the last such line, not logged)"
    )
    assert registry.value("fleet_relay_dropped_total", reason="too_large") == 52
