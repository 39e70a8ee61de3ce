"""A unit's web UI opens on an origin of its own, never on the dashboard's: a page a compromised unit serves must
not be able to act as the operator who opened it.

The dashboard's cookie on `/api/devices/{id}/proxy/{port}/...` buys a one-time ticket and a redirect to
`http://<label>.localhost:<port>/` (or the configured FLEET_PROXY_ORIGIN); the ticket buys a cookie that is good for
that unit and port only, for as long as the dashboard session lasts. Real service, broker and agent process; the
browser is played by httpx, connecting to 127.0.0.1 with the unit origin's Host header.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.fleet_service.conftest import Fleet
from tests.fleet_service.terminal.support import AUTH
from tests.fleet_service.terminal.unit_web import PAGE
from tests.support.auth import Browser, add_user, login
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for

UI_COOKIE = "fleet_unit_ui"


def _operator(fleet, name: str) -> Browser:
    return login(fleet.stack, name, add_user(fleet.stack, name, "operator"))


def _enter(fleet, browser: Browser, device_id: str, port: int, path: str = "/page?x=1") -> tuple[str, httpx.Client]:
    """Open the unit's web UI the way a browser does: the dashboard's redirect, then the ticket on the unit origin.
    Returns the unit origin's host and a client holding its cookie."""
    r = browser.client.get(f"/api/devices/{device_id}/proxy/{port}{path}")
    assert r.status_code == 303, (r.status_code, r.text)
    target = urlsplit(r.headers["location"])
    assert target.path == "/.fleet-proxy/enter", r.headers["location"]
    unit = httpx.Client(base_url=fleet.stack.url, timeout=15, headers={"Host": target.netloc})
    r = unit.get(f"{target.path}?{target.query}")
    assert r.status_code == 303 and r.headers["location"] == path, (r.status_code, r.text, r.headers)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{UI_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie, cookie
    assert "Domain" not in cookie, cookie  # for this host only: never for the unit origins' parent domain
    return target.netloc, unit


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_the_dashboards_origin_never_serves_a_units_page_to_a_browser(fleet, agents, web):
    agents(fleet, "ui-home", *web.agent_options())
    browser = _operator(fleet, "ui-home-op")
    try:
        r = browser.client.get(f"/api/devices/ui-home/proxy/{web.http_port}/page?x=1")
        assert r.status_code == 303, r.text
        target = urlsplit(r.headers["location"])
        stack = urlsplit(fleet.stack.url)
        assert target.hostname and target.hostname.endswith(".localhost") and target.port == stack.port
        assert target.hostname.startswith(f"ui-home--{web.http_port}--"), target.hostname
        assert not web.seen, "the unit was asked for its page on the dashboard's origin"

        # Nothing but that redirect: a change or a WebSocket with the dashboard's cookie is refused here.
        base = f"/api/devices/ui-home/proxy/{web.http_port}"
        csrf = {"X-CSRF-Token": browser.csrf_token, "Origin": fleet.stack.url}
        r = browser.client.post(base + "/form", content=b"a=1", headers=csrf)
        assert r.status_code == 403 and "its own origin" in r.json()["detail"], r.text
        cookie = {"Cookie": f"fleet_session={browser.client.cookies['fleet_session']}", "Origin": fleet.stack.url}
        ws_url = fleet.stack.url.replace("http://", "ws://") + f"/api/devices/ui-home/proxy/{web.ws_port}/echo"
        with connect(ws_url, additional_headers=cookie) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 4403 and "its own origin" in ws.close_reason, (ws.close_code, ws.close_reason)
        assert not web.seen and not web.ws_seen
    finally:
        browser.client.close()


@pytest.mark.parametrize("fleet", ["embedded-sqlite", "mosquitto-sqlite"], indirect=True)
def test_a_ticket_opens_the_units_own_origin_once_and_the_unit_sees_no_fleet_credential(fleet, agents, web):
    agents(fleet, "ui-ticket", *web.agent_options())
    browser = _operator(fleet, "ui-ticket-op")
    try:
        r = browser.client.get(f"/api/devices/ui-ticket/proxy/{web.http_port}/page?x=1")
        target = urlsplit(r.headers["location"])
        unit = httpx.Client(base_url=fleet.stack.url, timeout=15, headers={"Host": target.netloc})
        first = unit.get(f"{target.path}?{target.query}")
        assert first.status_code == 303
        again = unit.get(f"{target.path}?{target.query}")  # a ticket is good once
        assert again.status_code == 403 and "ticket" in again.text, again.text

        page = unit.get("/page?x=1")  # the cookie the first answer set
        assert page.status_code == 200 and page.content == PAGE, page.text
        assert "unit_pref=dark" in page.headers["set-cookie"]  # the unit's own cookies pass
        seen = {k.lower(): v for k, v in web.seen[-1]["headers"].items()}
        assert web.seen[-1]["path"] == "/page?x=1"
        assert seen.get("cookie") is None and "authorization" not in seen and "x-csrf-token" not in seen, seen
        assert seen["x-forwarded-host"] == target.netloc and seen.get("x-forwarded-prefix", "") == ""

        tossed = unit.get("/tossing")  # a cookie the unit sets for the parent domain is kept to its own host
        assert tossed.status_code == 200 and tossed.headers["set-cookie"] == "tossed=1; Path=/", tossed.headers

        assert unit.get("/", headers={"Cookie": ""}).status_code == 401  # no cookie: sent back to the dashboard
        unit.close()
    finally:
        browser.client.close()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_one_units_cookie_opens_nothing_else(fleet, agents, web):
    agents(fleet, "ui-one", *web.agent_options())
    agents(fleet, "ui-two", *web.agent_options())
    browser = _operator(fleet, "ui-one-op")
    try:
        host, unit = _enter(fleet, browser, "ui-one", web.http_port)
        other_port, _ = _enter(fleet, browser, "ui-one", web.ws_port, "/")
        other_unit, _ = _enter(fleet, browser, "ui-two", web.http_port)
        assert len({host, other_port, other_unit}) == 3, "each unit and port has an origin of its own"
        cookie = unit.cookies[UI_COOKIE]
        for elsewhere in (other_port, other_unit, "made-up--80--0123456789.localhost"):
            r = unit.get("/page", headers={"Host": elsewhere, "Cookie": f"{UI_COOKIE}={cookie}"})
            assert r.status_code == 401, (elsewhere, r.status_code, r.text)
        assert unit.get("/page").status_code == 200
    finally:
        browser.client.close()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_changes_and_websockets_from_another_origin_are_refused(fleet, agents, web):
    agents(fleet, "ui-csrf", *web.agent_options())
    browser = _operator(fleet, "ui-csrf-op")
    try:
        host, unit = _enter(fleet, browser, "ui-csrf", web.http_port)
        sibling = "http://another-unit--80--0123456789.localhost"
        r = unit.post("/form", content=b"a=1", headers={"Origin": f"http://{host}"})
        assert r.status_code == 201 and r.text == "you sent: a=1"
        r = unit.post("/form", content=b"a=2", headers={"Origin": sibling})
        assert r.status_code == 403 and "another origin" in r.text, r.text
        r = unit.post("/form", content=b"a=3", headers={"Sec-Fetch-Site": "same-site"})
        assert r.status_code == 403, r.text
        assert [s["method"] for s in web.seen].count("POST") == 1

        ws_host, ws_unit = _enter(fleet, browser, "ui-csrf", web.ws_port, "/")
        url = f"ws://{ws_host}/echo?room=2"  # the socket goes to the service: *.localhost need not resolve here
        service = urlsplit(fleet.stack.url)
        cookie = f"{UI_COOKIE}={ws_unit.cookies[UI_COOKIE]}"
        own = {"Cookie": cookie, "Origin": f"http://{ws_host}"}
        sock = socket.create_connection((service.hostname, service.port))
        with connect(url, sock=sock, additional_headers=own) as ws:
            ws.send("hello from its own page")
            assert ws.recv(timeout=15) == "hello from its own page"
        sock = socket.create_connection((service.hostname, service.port))
        with connect(url, sock=sock, additional_headers={**own, "Origin": sibling}) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 4403 and "another origin" in ws.close_reason
        assert len(web.ws_seen) == 1 and "cookie" not in {k.lower() for k in web.ws_seen[0]["headers"]}
    finally:
        browser.client.close()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_signing_out_or_losing_the_role_ends_the_units_web_ui(fleet, agents, web):
    agents(fleet, "ui-end", *web.agent_options())
    browser = _operator(fleet, "ui-end-op")
    _, unit = _enter(fleet, browser, "ui-end", web.http_port)
    assert unit.get("/page").status_code == 200
    assert browser.request("POST", "/api/auth/logout").status_code in (200, 204)
    r = unit.get("/page")
    assert r.status_code == 401 and "dashboard" in r.text, r.text
    browser.client.close()

    browser = login(fleet.stack, "ui-end-op", "correct horse battery")
    _, unit = _enter(fleet, browser, "ui-end", web.http_port)
    assert unit.get("/page").status_code == 200
    assert fleet.api.patch("/api/users/ui-end-op", json={"role": "viewer"}).status_code == 200
    r = unit.get("/page")
    assert r.status_code == 403 and "operator role" in r.text, r.text
    browser.client.close()


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_scripts_with_a_token_get_the_page_sandboxed_on_the_fleet_path(fleet, agents, web):
    agents(fleet, "ui-token", *web.agent_options())
    r = httpx.get(f"{fleet.stack.url}/api/devices/ui-token/proxy/{web.http_port}/page", headers=AUTH, timeout=15)
    assert r.status_code == 200 and r.content == PAGE
    assert r.headers.get_list("content-security-policy") == ["sandbox"], r.headers


@pytest.mark.parametrize("fleet", ["embedded-sqlite"], indirect=True)
def test_without_a_unit_origin_a_browser_is_told_what_to_set(fleet, agents, web):
    agents(fleet, "ui-noorigin", *web.agent_options())
    browser = _operator(fleet, "ui-noorigin-op")
    try:
        # Reached by a public name, with no FLEET_PROXY_ORIGIN: there is no origin to give the unit.
        r = browser.client.get(
            f"/api/devices/ui-noorigin/proxy/{web.http_port}/", headers={"Host": "fleet.example.com"}
        )
        assert r.status_code == 503 and "FLEET_PROXY_ORIGIN" in r.json()["detail"], r.text
        assert not web.seen
    finally:
        browser.client.close()


def test_a_configured_unit_origin_is_used(tmp_path, agents, web):
    settings = settings_for(tmp_path, proxy_origin="http://*.units.test")
    with StackThread(settings) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="service connected to the broker")
        with stack.client() as api:
            fleet = Fleet(stack, api, stack.mqtt_port)
            agents(fleet, "ui-conf", *web.agent_options())
            browser = _operator(fleet, "ui-conf-op")
            try:
                r = browser.client.get(f"/api/devices/ui-conf/proxy/{web.http_port}/page")
                assert r.status_code == 303, r.text
                target = urlsplit(r.headers["location"])
                assert target.scheme == "http" and target.port is None
                assert target.hostname and target.hostname.endswith(".units.test"), target
                host, unit = _enter(fleet, browser, "ui-conf", web.http_port, "/page")
                assert host == target.netloc and unit.get("/page").content == PAGE
                # *.localhost is not this service's unit origin when another is configured
                r = unit.get("/page", headers={"Host": host.replace(".units.test", ".localhost")})
                assert r.status_code == 404 or r.content != PAGE
            finally:
                browser.client.close()


def test_the_setting_is_checked(tmp_path):
    from pydantic import ValidationError

    for bad in ("units.test", "http://units.test", "ftp://*.units.test", "http://*.", "http://a.*.units.test"):
        with pytest.raises(ValidationError, match="proxy_origin"):
            settings_for(tmp_path, proxy_origin=bad)
