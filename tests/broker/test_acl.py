"""The per-unit topic ACL (docs/protocol.md) and who may connect, on a real broker."""

from __future__ import annotations

import pytest
from amqtt.contexts import Action

from broker.credentials import SERVICE, Principal
from broker.plugins import may_access
from tests.broker.wire_client import WireClient

U1 = Principal("unit", "u1")


@pytest.mark.parametrize(
    ("principal", "topic", "action", "allowed"),
    [
        (U1, "fleet/u1/logs", Action.PUBLISH, True),
        (U1, "fleet/u1/state", Action.PUBLISH, True),
        (U1, "fleet/u1/relay/up", Action.PUBLISH, True),
        (U1, "fleet/u2/logs", Action.PUBLISH, False),
        (U1, "fleet/u1/cmd", Action.PUBLISH, False),
        (U1, "fleet/u1/config/desired", Action.PUBLISH, False),
        (U1, "fleet/u1/relay/down", Action.PUBLISH, False),
        (U1, "fleet/u1/cmd", Action.SUBSCRIBE, True),
        (U1, "fleet/u1/config/desired", Action.SUBSCRIBE, True),
        (U1, "fleet/u1/relay/down", Action.SUBSCRIBE, True),
        (U1, "fleet/u1/logs", Action.SUBSCRIBE, False),
        (U1, "fleet/u2/cmd", Action.SUBSCRIBE, False),
        (U1, "fleet/+/cmd", Action.SUBSCRIBE, False),
        (U1, "fleet/u1/#", Action.SUBSCRIBE, False),
        (U1, "$share/g/fleet/u1/cmd", Action.SUBSCRIBE, False),
        (U1, "fleet/u1/cmd", Action.RECEIVE, True),
        (U1, "fleet/u2/cmd", Action.RECEIVE, False),
        (U1, "fleet/u2/state", Action.RECEIVE, False),
        (SERVICE, "fleet/#", Action.SUBSCRIBE, True),
        (SERVICE, "$share/fleet/fleet/+/logs", Action.SUBSCRIBE, True),
        (SERVICE, "fleet/u1/cmd", Action.PUBLISH, True),
        (SERVICE, "#", Action.SUBSCRIBE, False),
        (SERVICE, "other/topic", Action.PUBLISH, False),
        (None, "fleet/u1/logs", Action.PUBLISH, False),
    ],
)
def test_may_access(principal, topic, action, allowed):
    assert may_access(principal, topic, action) is allowed


def test_a_unit_subscribes_only_to_its_own_receive_topics(mqtt):
    unit = mqtt.wire("u1")
    refused = ["fleet/u2/cmd", "fleet/#", "#", "+/+/cmd", "fleet/+/cmd", "fleet/u1/logs", "fleet/u1/+", "$SYS/#"]
    assert unit.subscribe(*refused) == [0x80] * len(refused)
    assert unit.subscribe("fleet/u1/cmd", "fleet/u1/config/desired", "fleet/u1/relay/down") == [1, 1, 1]


def test_a_unit_publishes_only_on_its_own_unit_side_topics(mqtt):
    service = mqtt.wire("svc")
    assert service.subscribe("fleet/#") == [1]
    unit = mqtt.wire("u1")
    forbidden = [
        "fleet/u2/logs",
        "fleet/u2/state",
        "fleet/u1/cmd",
        "fleet/u1/config/desired",
        "fleet/u1/relay/down",
        "fleet/u1/unknown",
        "other/topic",
    ]
    for topic in forbidden:
        unit.publish(topic, b"{}", qos=1)
    unit.publish("fleet/u1/logs", b"allowed", qos=1)  # after the others: it arrives last if they do at all
    got = service.next_message(3)
    assert got is not None and (got.topic, got.payload) == ("fleet/u1/logs", b"allowed")
    assert service.messages(0.3) == []
    unit.ping()  # refused publishes are dropped, not answered by a disconnect


def test_the_service_may_use_everything_under_fleet_only(mqtt):
    service = mqtt.wire("svc")
    assert service.subscribe("#", "other/+", "fleet/#", "$share/fleet/fleet/+/state") == [0x80, 0x80, 1, 1]
    unit = mqtt.wire("u1")
    assert unit.subscribe("fleet/u1/cmd") == [1]
    service.publish("fleet/u1/cmd", b"to u1", qos=1)
    service.publish("fleet/u2/cmd", b"to u2", qos=1)
    assert [m.payload for m in unit.take(1)] == [b"to u1"]


@pytest.mark.parametrize(
    ("client_id", "username", "password", "will", "code"),
    [
        ("u1", None, None, None, 5),  # anonymous
        ("u1", "u1", "wrong", None, 4),
        ("u1", "u1", None, None, 4),  # user name without password
        ("ghost", "ghost", "secret-u1", None, 4),  # unknown unit
        ("Not-An-Id", "Not-An-Id", "x", None, 4),
        ("u2", "u1", "secret-u1", None, 2),  # client id must be the device id
        ("svc", "_fleet_service", "wrong", None, 4),
        ("u1", "u1", "secret-u1", ("fleet/u2/state", b"{}", 1, True), 5),  # a Will on another unit's topic
    ],
)
def test_refused_connections(mqtt, client_id, username, password, will, code):
    client = WireClient(mqtt.port)
    assert client.connect(client_id, username, password, will=will) == code
    assert client.closed_by_broker(3)


def test_failed_logins_are_rate_limited_per_source(start_broker):
    running = start_broker(auth_failures_per_minute=3)
    for _ in range(3):
        assert WireClient(running.port).connect("u1", "u1", "wrong") == 4
    assert WireClient(running.port).connect("u1", "u1", "secret-u1") == 4  # blocked, even with the right secret
    assert WireClient(running.port).connect("u2", "u2", "secret-u2") == 4
