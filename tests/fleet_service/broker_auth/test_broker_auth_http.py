"""Clustered brokers ask the running service over real HTTP who may connect and which topics each client may use.

For each broker shape (EMQX, go-auth in JSON and form mode, VerneMQ): a unit's right secret is let in and a wrong
one is not; a unit deleted or re-keyed is refused at its very next check although its secret was just verified
(and cached); the service account is a superuser by its secret. The topic matrix comes from protocol/topics.py,
the one rule every broker set-up enforces: a unit's own uplink topics to publish, its own downlink topics to
subscribe, nothing of another unit and no wildcard; the service account everything under `fleet/`.
"""

from __future__ import annotations

import httpx
import pytest

from protocol.ids import SERVICE_USERNAME
from protocol.topics import UNIT_PUBLISHES, UNIT_RECEIVES, Kind, topic
from tests.fleet_service.broker_auth.shapes import SERVICE_SECRET, SHAPES, TOKEN, enroll, shape
from tests.support.auth import basic, bearer, token_for
from tests.support.stack import StackThread

ROUTES = (
    "/api/broker-auth/emqx/authn",
    "/api/broker-auth/emqx/authz",
    "/api/broker-auth/go-auth/user",
    "/api/broker-auth/go-auth/superuser",
    "/api/broker-auth/go-auth/acl",
    "/api/broker-auth/vernemq/register",
    "/api/broker-auth/vernemq/publish",
    "/api/broker-auth/vernemq/subscribe",
)
OWN_PUBLISH = sorted(k.value for k in UNIT_PUBLISHES)
OWN_RECEIVE = sorted(k.value for k in UNIT_RECEIVES)


@pytest.mark.parametrize("name", SHAPES)
def test_a_unit_is_let_in_by_its_secret_only(stack, name):
    s = shape(name, stack.url)
    unit = f"ba-in-{name}"
    secret = enroll(stack, unit)
    other_secret = enroll(stack, f"ba-in2-{name}")
    assert s.login(unit, secret)
    assert s.login(unit, secret)  # again, from the replica's cache of verified secrets
    assert not s.login(unit, "x" + secret[1:] if secret[0] != "x" else "y" + secret[1:])
    assert not s.login(unit, other_secret)  # another unit's secret
    assert not s.login(unit, secret, client_id="someone-else")  # a unit connects under its own id only
    assert not s.login("ba-never-enrolled", secret)
    nothing = None if name == "vernemq" else ""  # what each broker sends for a CONNECT without credentials
    assert not s.login(nothing, nothing, client_id="anonymous-client")
    assert not s.login(unit, "")
    assert not s.login("bad id with spaces", secret)


@pytest.mark.parametrize("name", SHAPES)
def test_a_deleted_unit_is_refused_at_its_next_check(stack, name):
    s = shape(name, stack.url)
    unit = f"ba-rev-{name}"
    secret = enroll(stack, unit)
    assert s.login(unit, secret) and s.publish(unit, topic(unit, Kind.STATE))
    with stack.client() as api:
        assert api.delete(f"/api/devices/{unit}").status_code == 204
    assert not s.login(unit, secret)
    # a connection the broker still holds gets no more topics either
    assert not s.publish(unit, topic(unit, Kind.STATE))
    assert not s.subscribe(unit, topic(unit, Kind.CMD))


@pytest.mark.parametrize("name", SHAPES)
def test_a_rotated_secret_is_refused_at_its_next_check(stack, name):
    s = shape(name, stack.url)
    unit = f"ba-rot-{name}"
    old = enroll(stack, unit)
    assert s.login(unit, old)
    with stack.client() as api:
        r = api.post(f"/api/devices/{unit}/rotate-secret")
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
    assert not s.login(unit, old)
    assert s.login(unit, new)
    assert not s.login(unit, old)  # the new secret in the cache does not let the old one back in


@pytest.mark.parametrize("name", SHAPES)
def test_the_service_account_is_a_superuser_by_its_secret(stack, name):
    s = shape(name, stack.url)
    assert s.login(SERVICE_USERNAME, SERVICE_SECRET, client_id="_fleet-service-replica-a")
    assert not s.login(SERVICE_USERNAME, SERVICE_SECRET + "x", client_id="_fleet-service-replica-a")
    assert not s.login(SERVICE_USERNAME, "", client_id="_fleet-service-replica-a")
    if name != "vernemq":
        assert s.superuser(SERVICE_USERNAME, SERVICE_SECRET)
    unit = f"ba-su-{name}"
    secret = enroll(stack, unit)
    if name == "emqx":
        r = s.post("/api/broker-auth/emqx/authn", {"username": unit, "password": secret, "clientid": unit})
        assert r.json() == {"result": "allow", "is_superuser": False}
    if name.startswith("go-auth"):
        assert s.post("/api/broker-auth/go-auth/superuser", {"username": unit}).status_code == 403


@pytest.mark.parametrize("name", SHAPES)
def test_the_topic_matrix(stack, name):
    s = shape(name, stack.url)
    me, other = f"ba-m-{name}", f"ba-mo-{name}"
    enroll(stack, me)
    enroll(stack, other)
    wrong: list[str] = []

    def expect(what: str, got: bool, want: bool) -> None:
        if got != want:
            wrong.append(f"{what}: {'allowed' if got else 'denied'}, expected {'allowed' if want else 'denied'}")

    for kind in OWN_PUBLISH:
        expect(f"publish own {kind}", s.publish(me, f"fleet/{me}/{kind}"), True)
        expect(f"publish other's {kind}", s.publish(me, f"fleet/{other}/{kind}"), False)
        expect(f"subscribe own uplink {kind}", s.subscribe(me, f"fleet/{me}/{kind}"), False)
        expect(f"publish own {kind} under another client id", s.publish(me, f"fleet/{me}/{kind}", other), False)
    for kind in OWN_RECEIVE:
        expect(f"subscribe own {kind}", s.subscribe(me, f"fleet/{me}/{kind}"), True)
        expect(f"subscribe other's {kind}", s.subscribe(me, f"fleet/{other}/{kind}"), False)
        expect(f"publish own downlink {kind}", s.publish(me, f"fleet/{me}/{kind}"), False)
    for wide in (
        "fleet/+/cmd",
        "fleet/+/+",
        "fleet/#",
        "#",
        "+/+/cmd",
        f"fleet/{me}/#",
        f"fleet/{me}/+",
        "$share/fleet/fleet/+/state",
        f"$share/g/fleet/{me}/cmd",
        "$SYS/#",
        "fleet/_events/+",
    ):
        expect(f"subscribe {wide}", s.subscribe(me, wide), False)
        expect(f"publish {wide}", s.publish(me, wide), False)
    for name_ in ("fleet/_events/replica-a", "other/topic", "fleet", f"fleet/{me}", f"fleet/{me}/nothing"):
        expect(f"publish {name_}", s.publish(me, name_), False)
    # the service account: everything under fleet/, wildcards and shared subscriptions included; nothing else
    svc = SERVICE_USERNAME
    for allowed in ("fleet/+/state", "fleet/#", "$share/fleet/fleet/+/metrics", f"fleet/{me}/cmd", "fleet/_events/+"):
        expect(f"service subscribe {allowed}", s.subscribe(svc, allowed, "svc"), True)
    for allowed in (f"fleet/{me}/cmd", f"fleet/{other}/config/desired", "fleet/_events/replica-a"):
        expect(f"service publish {allowed}", s.publish(svc, allowed, "svc"), True)
    for denied in ("#", "$SYS/#", "other/topic"):
        expect(f"service subscribe {denied}", s.subscribe(svc, denied, "svc"), False)
    # nobody else
    expect("anonymous publish", s.publish("", f"fleet/{me}/state", "x"), False)
    expect("unknown publish", s.publish("ba-nobody", "fleet/ba-nobody/state"), False)
    assert not wrong, "\n".join(wrong)


def test_a_subscribe_with_some_filters_refused_answers_each(stack):
    """VerneMQ: the allowed filters keep their qos, the refused ones get 128, in the order asked."""
    me = "ba-vsub"
    enroll(stack, me)
    s = shape("vernemq", stack.url)
    asked = [
        {"topic": f"fleet/{me}/cmd", "qos": 1},
        {"topic": "fleet/+/cmd", "qos": 1},
        {"topic": f"fleet/{me}/config/desired", "qos": 2},
    ]
    body = {"username": me, "client_id": me, "mountpoint": "", "topics": asked}
    r = s.post("/api/broker-auth/vernemq/subscribe", body)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "result": "ok",
        "topics": [
            {"topic": f"fleet/{me}/cmd", "qos": 1},
            {"topic": "fleet/+/cmd", "qos": 128},
            {"topic": f"fleet/{me}/config/desired", "qos": 2},
        ],
    }
    go = shape("go-auth", stack.url)  # acc 3: read and write; a unit may never do both on one topic
    both = {"username": me, "clientid": me, "topic": f"fleet/{me}/cmd", "acc": 3}
    assert go.post("/api/broker-auth/go-auth/acl", both).status_code == 403


@pytest.mark.parametrize("route", ROUTES)
def test_only_the_broker_token_opens_the_routes(stack, route):
    unit = "ba-guard"
    try:
        secret = enroll(stack, unit)
    except AssertionError:  # enrolled by an earlier parameter
        with stack.client() as api:
            secret = api.post(f"/api/devices/{unit}/rotate-secret").json()["secret"]
    viewer = token_for(stack, "viewer", f"ba-viewer-{route.rsplit('/', 1)[-1]}")
    refused = {
        "none": {},
        "wrong bearer": bearer(TOKEN[:-1] + "x"),
        "admin token": bearer("test-admin-token-0123456789abcdef"),
        "viewer token": bearer(viewer),
        "unit credentials": basic(unit, secret),
        "token as the Basic user name": basic(TOKEN, "x"),
    }
    body = {"username": unit, "password": secret, "clientid": unit}
    for who, headers in refused.items():
        r = httpx.post(stack.url + route, json=body, headers=headers, timeout=15)
        assert r.status_code == 401, f"{who}: {r.status_code} {r.text}"
        assert secret not in r.text
    # the token as a Bearer token or as the password of Basic (what VerneMQ and go-auth send from a URL)
    for headers in (bearer(TOKEN), basic("broker", TOKEN)):
        r = httpx.post(stack.url + route, json={}, headers=headers, timeout=15)
        assert r.status_code == 422, r.text  # let in; the empty body is refused for what it lacks


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/api/broker-auth/emqx/authn", {"password": "x"}, "username"),
        ("/api/broker-auth/emqx/authn", {"username": ["a"], "password": "x"}, "username"),
        ("/api/broker-auth/emqx/authz", {"username": "u", "topic": "fleet/u/state", "action": "all"}, "action"),
        ("/api/broker-auth/emqx/authz", {"username": "u", "action": "publish"}, "topic"),
        ("/api/broker-auth/go-auth/user", {"username": "u"}, "password"),
        ("/api/broker-auth/go-auth/acl", {"username": "u", "topic": "t", "acc": 7}, "acc"),
        ("/api/broker-auth/go-auth/acl", {"username": "u", "topic": "t", "acc": "write"}, "acc"),
        ("/api/broker-auth/go-auth/superuser", {}, "username"),
        ("/api/broker-auth/vernemq/register", {"username": "u", "password": "p"}, "client_id"),
        ("/api/broker-auth/vernemq/publish", {"username": "u", "client_id": "u", "topic": "t", "qos": 5}, "qos"),
        ("/api/broker-auth/vernemq/subscribe", {"username": "u", "client_id": "u", "topics": []}, "topics"),
        ("/api/broker-auth/vernemq/subscribe", {"username": "u", "client_id": "u", "topics": [{"qos": 1}]}, "topic"),
        ("/api/broker-auth/emqx/authn", "not an object", "body"),
        ("/api/broker-auth/emqx/authn", None, "body"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field_and_changes_nothing(stack, route, body, field):
    unit = "ba-bad-body"
    try:
        secret = enroll(stack, unit)
    except AssertionError:
        with stack.client() as api:
            secret = api.post(f"/api/devices/{unit}/rotate-secret").json()["secret"]
    before = audit_rows(stack)
    if body is None:
        r = httpx.post(stack.url + route, content=b"{not json", headers=bearer(TOKEN), timeout=15)
    else:
        r = httpx.post(stack.url + route, json=body, headers=bearer(TOKEN), timeout=15)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"], r.text
    assert audit_rows(stack) == before  # broker questions are not audited, refused or not
    assert shape("emqx", stack.url).login(unit, secret)


def test_a_vernemq_hook_on_the_wrong_route_is_a_422(stack):
    s = shape("vernemq", stack.url)
    body = {"username": "u", "client_id": "u", "mountpoint": "", "qos": 0, "topic": "fleet/u/state", "retain": False}
    r = s.post("/api/broker-auth/vernemq/publish", body, {"vernemq-hook": "auth_on_register"})
    assert r.status_code == 422 and "auth_on_publish" in r.text, r.text


def test_answers_are_counted_and_passwords_never_logged(stack, caplog):
    unit = "ba-logs"
    secret = enroll(stack, unit)
    caplog.set_level("DEBUG")
    for name in SHAPES:
        shape(name, stack.url).login(unit, secret)
        shape(name, stack.url).login(unit, secret[::-1])
        shape(name, stack.url).login(SERVICE_USERNAME, SERVICE_SECRET[::-1], client_id="svc")
    text = caplog.text
    for secret_ in (secret, secret[::-1], SERVICE_SECRET, SERVICE_SECRET[::-1], TOKEN):
        assert secret_ not in text
    assert "broker login refused for ba-logs" in text
    with stack.client() as api:
        metrics = api.get("/metrics").text
    assert 'fleet_broker_auth_decisions_total{check="authn",result="deny",shape="emqx"}' in metrics


def audit_rows(stack: StackThread) -> int:
    with stack.client() as api:
        r = api.get("/api/audit", params={"limit": 500})
        assert r.status_code == 200, r.text
        return sum(1 for e in r.json()["items"] if e["route"].startswith("/api/broker-auth"))
