"""The requests each broker sends, replayed byte for byte as its documentation describes them, and its answers
read the way that broker reads them.

No EMQX, VerneMQ or mosquitto-go-auth binary runs here, so the bodies below are written from each broker's
documented field lists: EMQX 5 renders its body template with every placeholder as a string; go-auth's HTTP backend
posts `username`/`password`/`clientid`, `username`, or `username`/`clientid`/`topic`/`acc` (a JSON number, or form
fields); VerneMQ's webhooks post JSON and name the hook in a `vernemq-hook` header.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fleet_service.broker_auth.shapes import SERVICE_SECRET, TOKEN, enroll
from tests.support.auth import basic, bearer

UNIT = "contract-unit-1"


@pytest.fixture(scope="module")
def secret(stack):
    return enroll(stack, UNIT)


def send(stack, path: str, raw: str | bytes, content_type: str, headers: dict | None = None) -> httpx.Response:
    body = raw.encode() if isinstance(raw, str) else raw
    hdrs = {"Content-Type": content_type, **bearer(TOKEN), **(headers or {})}
    return httpx.post(stack.url + path, content=body, headers=hdrs, timeout=15)


def json_answer(r: httpx.Response) -> object:
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


def emqx_authn_body(username: str, password: str, clientid: str) -> str:
    """`authentication.body` = {clientid, username, password, peerhost, peerport, cert_subject, cert_common_name}."""
    return json.dumps(
        {
            "clientid": clientid,
            "username": username,
            "password": password,
            "peerhost": "192.0.2.10",
            "peerport": "51544",
            "cert_subject": "",
            "cert_common_name": "",
        }
    )


def emqx_authz_body(username: str, topic: str, action: str) -> str:
    """`authorization.sources[].body` with every request placeholder EMQX documents."""
    return json.dumps(
        {
            "clientid": username,
            "username": username,
            "peerhost": "192.0.2.10",
            "proto_name": "MQTT",
            "mountpoint": "",
            "action": action,
            "topic": topic,
            "qos": "1",
            "retain": "false",
            "zone": "default",
        }
    )


def test_emqx(stack, secret):
    r = send(stack, "/api/broker-auth/emqx/authn", emqx_authn_body(UNIT, secret, UNIT), "application/json")
    assert r.status_code == 200 and json_answer(r) == {"result": "allow", "is_superuser": False}
    r = send(stack, "/api/broker-auth/emqx/authn", emqx_authn_body(UNIT, "wrong", UNIT), "application/json")
    assert r.status_code == 200 and json_answer(r) == {"result": "deny", "is_superuser": False}
    svc = emqx_authn_body("_fleet_service", SERVICE_SECRET, "_fleet-service-a")
    r = send(stack, "/api/broker-auth/emqx/authn", svc, "application/json")
    assert r.status_code == 200 and json_answer(r) == {"result": "allow", "is_superuser": True}
    for topic, action, result in (
        (f"fleet/{UNIT}/state", "publish", "allow"),
        (f"fleet/{UNIT}/cmd", "subscribe", "allow"),
        ("fleet/+/cmd", "subscribe", "deny"),
        (f"fleet/{UNIT}/cmd", "publish", "deny"),
    ):
        r = send(stack, "/api/broker-auth/emqx/authz", emqx_authz_body(UNIT, topic, action), "application/json")
        assert r.status_code == 200 and json_answer(r) == {"result": result}, (topic, action)


@pytest.mark.parametrize("mode", ["json", "form"])
def test_mosquitto_go_auth(stack, secret, mode):
    def body(**fields) -> tuple[str, str]:
        if mode == "json":
            return json.dumps(fields), "application/json"
        return str(httpx.QueryParams(fields)), "application/x-www-form-urlencoded"

    def status(path: str, **fields) -> int:
        raw, kind = body(**fields)
        r = send(stack, path, raw, kind)
        answer = json_answer(r)  # go-auth's `json` response mode: {"ok": bool, "error": string}
        assert answer == ({"ok": True, "error": ""} if r.status_code == 200 else {"ok": False, "error": "not allowed"})
        return r.status_code

    assert status("/api/broker-auth/go-auth/user", username=UNIT, password=secret, clientid=UNIT) == 200
    assert status("/api/broker-auth/go-auth/user", username=UNIT, password="wrong", clientid=UNIT) == 403
    assert status("/api/broker-auth/go-auth/superuser", username=UNIT) == 403
    assert status("/api/broker-auth/go-auth/superuser", username="_fleet_service") == 200
    acl = "/api/broker-auth/go-auth/acl"
    assert status(acl, username=UNIT, clientid=UNIT, topic=f"fleet/{UNIT}/metrics", acc=2) == 200
    assert status(acl, username=UNIT, clientid=UNIT, topic=f"fleet/{UNIT}/config/desired", acc=4) == 200
    assert status(acl, username=UNIT, clientid=UNIT, topic=f"fleet/{UNIT}/config/desired", acc=1) == 200
    assert status(acl, username=UNIT, clientid=UNIT, topic="fleet/#", acc=4) == 403
    assert status(acl, username=UNIT, clientid=UNIT, topic="fleet/other-unit/metrics", acc=2) == 403


def test_vernemq(stack, secret):
    def hook(name: str, payload: dict, route: str) -> object:
        # Basic auth from `http://broker:TOKEN@host/...` in the webhook's endpoint URL
        headers = {"vernemq-hook": name, **basic("broker", TOKEN)}
        r = httpx.post(stack.url + route, content=json.dumps(payload).encode(), headers=headers, timeout=15)
        assert r.status_code == 200, r.text
        return json_answer(r)

    register = {
        "peer_addr": "192.0.2.10",
        "peer_port": 51544,
        "username": UNIT,
        "password": secret,
        "mountpoint": "",
        "client_id": UNIT,
        "clean_session": False,
    }
    assert hook("auth_on_register", register, "/api/broker-auth/vernemq/register") == {"result": "ok"}
    refused = {"result": {"error": "not_allowed"}}
    assert hook("auth_on_register", {**register, "password": "x"}, "/api/broker-auth/vernemq/register") == refused
    anonymous = {**register, "username": None, "password": None}
    assert hook("auth_on_register", anonymous, "/api/broker-auth/vernemq/register") == refused
    publish = {
        "username": UNIT,
        "client_id": UNIT,
        "mountpoint": "",
        "qos": 1,
        "topic": f"fleet/{UNIT}/heartbeat",
        "payload": "eyJ0cyI6IDF9",  # base64, VerneMQ's default
        "retain": False,
    }
    assert hook("auth_on_publish", publish, "/api/broker-auth/vernemq/publish") == {"result": "ok"}
    other = {**publish, "topic": "fleet/other-unit/heartbeat"}
    assert hook("auth_on_publish", other, "/api/broker-auth/vernemq/publish") == refused
    subscribe = {
        "client_id": UNIT,
        "mountpoint": "",
        "username": UNIT,
        "topics": [{"topic": f"fleet/{UNIT}/cmd", "qos": 1}, {"topic": f"fleet/{UNIT}/relay/down", "qos": 0}],
    }
    assert hook("auth_on_subscribe", subscribe, "/api/broker-auth/vernemq/subscribe") == {"result": "ok"}
    wide = {**subscribe, "topics": [{"topic": "#", "qos": 2}]}
    answer = hook("auth_on_subscribe", wide, "/api/broker-auth/vernemq/subscribe")
    assert answer == {"result": "ok", "topics": [{"topic": "#", "qos": 128}]}
