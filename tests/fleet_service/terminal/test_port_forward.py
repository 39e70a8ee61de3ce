"""A unit's loopback web server reached through the fleet: the raw port forward WebSocket and the HTTP/WebSocket
proxy, with the real service, broker (embedded amqtt and the managed Mosquitto) and agent process.

The "unit" runs on this machine, so its loopback is the test's: the server below is what the agent connects to.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest
from websockets.sync.client import connect

from tests.fleet_service.terminal.support import AUTH, forward_url
from tests.fleet_service.terminal.unit_web import CHUNKS, LARGE_SHA256, PAGE


def _rows(fleet, device_id: str) -> list[dict]:
    return fleet.api.get("/api/terminal-sessions", params={"device_id": device_id}).json()["items"]


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_the_forward_socket_carries_a_raw_http_exchange(fleet, agents, web):
    agents(fleet, "fwd-unit", *web.agent_options())
    with connect(forward_url(fleet.stack.url, "fwd-unit", web.http_port), additional_headers=AUTH) as ws:
        ws.send(b"GET /page HTTP/1.1\r\nHost: whatever\r\nConnection: close\r\n\r\n")
        received = bytearray()
        for message in ws:  # the server closes the connection after its answer: so does the socket, after it
            assert isinstance(message, bytes)
            received += message
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == PAGE, received[:300]

    row = next(r for r in _rows(fleet, "fwd-unit") if r["kind"] == "forward")
    assert row["port"] == web.http_port and row["ended_at"] and row["close_reason"] == "exited"
    assert row["bytes_in"] > 40 and row["bytes_out"] > len(PAGE) and not row["recording_available"]


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_the_proxy_serves_the_units_web_ui(fleet, agents, web):
    agents(fleet, "proxy-unit", *web.agent_options())
    base = f"{fleet.stack.url}/api/devices/proxy-unit/proxy/{web.http_port}"
    with httpx.Client(headers=AUTH, timeout=30) as client:
        r = client.get(base + "/page?x=1")
        assert r.status_code == 200 and r.content == PAGE and r.headers["content-type"] == "text/html"
        assert "unit_pref=dark" in r.headers.get("set-cookie", "")

        r = client.post(base + "/submit", content=b"name=lobby&bitrate=4000")
        assert r.status_code == 201 and r.content == b"you sent: name=lobby&bitrate=4000"

        r = client.get(base + "/chunked")
        assert r.status_code == 200 and r.content == b"".join(CHUNKS)

        r = client.get(base + "/until-close")
        assert r.status_code == 200 and r.content == b"the body ends when the connection does"

        digest, size = hashlib.sha256(), 0
        with client.stream("GET", base + "/large") as r:
            assert r.status_code == 200 and r.headers["content-length"] == str(5 * 1024 * 1024)
            for chunk in r.iter_bytes():
                digest.update(chunk)
                size += len(chunk)
        assert size == 5 * 1024 * 1024 and digest.hexdigest() == LARGE_SHA256

        assert client.get(base + "/missing").status_code == 404
        r = client.get(base, follow_redirects=False)  # the prefix alone: on to its slash (relative links resolve)
        assert r.status_code == 307 and r.headers["location"].endswith(f"/proxy/{web.http_port}/")

    seen = web.seen[0]["headers"]
    lower = {k.lower(): v for k, v in seen.items()}
    assert lower["host"] == f"127.0.0.1:{web.http_port}"
    assert "authorization" not in lower, seen
    assert lower["x-forwarded-prefix"] == f"/api/devices/proxy-unit/proxy/{web.http_port}"
    assert lower["x-forwarded-proto"] == "http" and lower["x-forwarded-for"] == "127.0.0.1"
    assert lower["x-forwarded-host"] == fleet.stack.url.split("://")[1]
    assert web.seen[0]["path"] == "/page?x=1"

    # Fewer streams than requests: the proxy reuses its idle connections to the unit.
    rows = [r for r in _rows(fleet, "proxy-unit") if r["kind"] == "proxy"]
    assert 1 <= len(rows) < 7, rows
    assert sum(r["bytes_out"] for r in rows) > 5 * 1024 * 1024


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_a_websocket_through_the_proxy_echoes(fleet, agents, web):
    agents(fleet, "proxy-ws", *web.agent_options())
    url = forward_url(fleet.stack.url, "proxy-ws", 0).replace("/forward/0", f"/proxy/{web.ws_port}/echo?room=1")
    with connect(url, additional_headers=AUTH, max_size=None) as ws:
        ws.send("hello unit")
        assert ws.recv(timeout=15) == "hello unit"
        blob = bytes(range(256)) * 1000
        ws.send(blob)
        assert ws.recv(timeout=15) == blob
    assert web.ws_seen[0]["path"] == "/echo?room=1"
    headers = {k.lower(): v for k, v in web.ws_seen[0]["headers"].items()}
    assert "authorization" not in headers and headers["host"] == f"127.0.0.1:{web.ws_port}"


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_the_operators_token_never_reaches_the_unit(fleet, agents, web):
    """Scripts' side; a browser's (the dashboard's cookie) is in test_unit_origin.py."""
    agents(fleet, "proxy-cookie", *web.agent_options())
    base = f"{fleet.stack.url}/api/devices/proxy-cookie/proxy/{web.http_port}"
    with httpx.Client(headers=AUTH, timeout=30) as client:
        r = client.get(base + "/headers", headers={"Cookie": "fleet_session=abc; unit_pref=dark; fleet_unit_ui=x"})
        assert r.status_code == 200, r.text
        seen = {k.lower(): v for k, v in r.json().items()}
        assert seen.get("cookie") == "unit_pref=dark", seen
        assert "x-csrf-token" not in seen and "authorization" not in seen
        r = client.post(base + "/form", content=b"a=1")
        assert r.status_code == 201 and r.text == "you sent: a=1"
    assert all(AUTH["Authorization"].split()[1] not in str(s["headers"]) for s in web.seen)
