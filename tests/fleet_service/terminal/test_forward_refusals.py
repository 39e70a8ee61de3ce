"""Who may not forward a port, and which ports: each refusal with the reason the operator sees, on the forward
socket and on the proxy. Real service on the embedded broker, real agent processes."""

from __future__ import annotations

import signal
import socket

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fleet_service.terminal.support import AUTH, forward_url
from tests.fleet_service.terminal.unit_web import PAGE
from tests.support.auth import add_user, login, token_for
from tests.support.stack import ADMIN_TOKEN

pytestmark = pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)


def refused(base: str, device_id: str, port: int, headers: dict | None = None) -> tuple[int | None, str]:
    with connect(forward_url(base, device_id, port), additional_headers=headers or AUTH, open_timeout=10) as ws:
        try:
            ws.recv(timeout=20)
        except Exception:  # noqa: BLE001 - the close is what the test reads
            pass
        return ws.close_code, ws.close_reason or ""


def proxy_get(fleet, device_id: str, port: int, token: str = ADMIN_TOKEN) -> httpx.Response:
    url = f"{fleet.stack.url}/api/devices/{device_id}/proxy/{port}/page"
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_unit_without_allowed_ports_refuses(fleet, agents, web):
    agents(fleet, "fwd-off")  # no --allow-remote-port
    code, reason = refused(fleet.stack.url, "fwd-off", web.http_port)
    assert code == 4410 and "port forwarding is disabled on this unit" in reason, (code, reason)
    r = proxy_get(fleet, "fwd-off", web.http_port)
    assert r.status_code == 403 and "port forwarding is disabled" in r.json()["detail"], r.text
    rows = fleet.api.get("/api/terminal-sessions", params={"device_id": "fwd-off"}).json()["items"]
    assert {r["close_reason"] for r in rows} == {"disabled"} and {r["kind"] for r in rows} == {"forward", "proxy"}


def test_only_the_allowed_ports_and_nothing_listening_is_named(fleet, agents, web):
    closed = free_port()
    agents(fleet, "fwd-ports", "--allow-remote-port", str(web.http_port), "--allow-remote-port", str(closed))
    code, reason = refused(fleet.stack.url, "fwd-ports", web.ws_port)  # the unit's own list
    assert code == 4403 and f"port {web.ws_port} is not allowed on this unit" in reason, (code, reason)
    code, reason = refused(fleet.stack.url, "fwd-ports", closed)
    assert code == 4502 and "connection refused" in reason, (code, reason)
    assert proxy_get(fleet, "fwd-ports", closed).status_code == 502

    # The desired config's remote_ports decide once set: the service refuses before asking the unit.
    r = fleet.api.put("/api/devices/fwd-ports/config", json={"remote_ports": [web.ws_port]})
    assert r.status_code == 200, r.text
    code, reason = refused(fleet.stack.url, "fwd-ports", web.http_port)
    assert code == 4403 and f"remote_ports: {web.ws_port}" in reason, (code, reason)
    assert fleet.api.put("/api/devices/fwd-ports/config", json={"remote_ports": []}).status_code == 200
    code, reason = refused(fleet.stack.url, "fwd-ports", web.ws_port)
    assert code == 4410 and "remote_ports: []" in reason, (code, reason)
    for bad in ([0], [70000], ["8080"], 8080, [True]):
        r = fleet.api.put("/api/devices/fwd-ports/config", json={"remote_ports": bad})
        assert r.status_code == 422 and "remote_ports" in r.text, r.text


def test_viewers_never_operators_not_on_admin_only_units_and_cannot_change_the_keys(fleet, agents, web):
    agents(fleet, "fwd-roles", "--allow-remote-port", str(web.http_port))
    viewer = token_for(fleet.stack, "viewer", "fwd-viewer")
    code, reason = refused(fleet.stack.url, "fwd-roles", web.http_port, {"Authorization": f"Bearer {viewer}"})
    assert code == 4403 and "operator role" in reason
    assert proxy_get(fleet, "fwd-roles", web.http_port, viewer).status_code == 403

    operator = token_for(fleet.stack, "operator", "fwd-operator")
    r = proxy_get(fleet, "fwd-roles", web.http_port, operator)
    assert r.status_code == 200 and r.content == PAGE
    as_operator = {"Authorization": f"Bearer {operator}"}
    for body in ({"remote_ports": [web.http_port]}, {"remote_ports_admin_only": False}):
        r = fleet.api.put("/api/devices/fwd-roles/config", json=body, headers=as_operator)
        assert r.status_code == 403 and "admin" in r.json()["detail"], r.text

    r = fleet.api.put("/api/devices/fwd-roles/config", json={"remote_ports_admin_only": True})
    assert r.status_code == 200, r.text
    code, reason = refused(fleet.stack.url, "fwd-roles", web.http_port, as_operator)
    assert code == 4403 and "admins only" in reason, (code, reason)
    assert proxy_get(fleet, "fwd-roles", web.http_port).status_code == 200  # the admin still may


def test_a_cookie_from_another_origin_is_refused(fleet, agents, web):
    agents(fleet, "fwd-origin", "--allow-remote-port", str(web.http_port))
    password = add_user(fleet.stack, "fwd-op", "operator")
    browser = login(fleet.stack, "fwd-op", password)
    cookie = {"Cookie": f"fleet_session={browser.client.cookies['fleet_session']}"}
    try:
        code, reason = refused(
            fleet.stack.url, "fwd-origin", web.http_port, {**cookie, "Origin": "https://evil.example"}
        )
        assert code == 4403 and "cross-origin" in reason, (code, reason)
        url = forward_url(fleet.stack.url, "fwd-origin", web.http_port)
        with connect(url, additional_headers={**cookie, "Origin": fleet.stack.url}) as ws:
            ws.send(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert ws.recv(timeout=15).startswith(b"HTTP/1.1 200")
    finally:
        browser.client.close()


def test_the_units_limit_and_an_offline_unit(fleet, agents, web):
    proc = agents(fleet, "fwd-limit", "--allow-remote-port", str(web.http_port), "--remote-port-max-sessions", "1")
    with connect(forward_url(fleet.stack.url, "fwd-limit", web.http_port), additional_headers=AUTH) as first:
        first.send(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: the connection stays open
        assert first.recv(timeout=15).startswith(b"HTTP/1.1 200")
        code, reason = refused(fleet.stack.url, "fwd-limit", web.http_port)
        assert code == 4429 and "at most 1 forwarded connection" in reason, (code, reason)
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    code, reason = refused(fleet.stack.url, "fwd-limit", web.http_port)
    assert code == 4409 and "offline" in reason
    r = proxy_get(fleet, "fwd-limit", web.http_port)
    assert r.status_code == 409 and "offline" in r.json()["detail"]
    assert refused(fleet.stack.url, "no-such-unit", web.http_port)[0] == 4404


def test_the_proxy_answers_a_refusal_as_the_api_does_and_the_socket_with_its_close_code(fleet):
    """Each refusal the socket closes with 44xx is the proxy's HTTP status of the same kind, with the API's body."""
    fleet.enroll("fwd-away")  # enrolled, never connected: offline
    base = fleet.stack.url
    cases = [
        ("fwd-away", "8080", {}, 401, 4401, "missing or invalid credentials"),
        ("no-such-unit", "8080", AUTH, 404, 4404, "no unit with id"),
        ("fwd-away", "80x", AUTH, 422, 4400, "port must be a number"),
        ("fwd-away", "8080", AUTH, 409, 4409, "is offline"),
    ]
    for device_id, port, headers, status, code, words in cases:
        r = httpx.get(f"{base}/api/devices/{device_id}/proxy/{port}/page", headers=headers, timeout=30)
        assert r.status_code == status and words in r.json()["detail"], (device_id, port, r.status_code, r.text)
        assert set(r.json()) == {"detail"}
        assert (r.headers.get("www-authenticate") == "Bearer") == (status == 401), r.headers
        socket_url = base.replace("http://", "ws://") + f"/api/devices/{device_id}/forward/{port}"
        with connect(socket_url, additional_headers=headers, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=20)
            assert ws.close_code == code and words in (ws.close_reason or ""), (device_id, port, ws.close_reason)
