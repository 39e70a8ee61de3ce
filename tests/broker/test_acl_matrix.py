"""The topic ACL matrix of docs/security.md, on the wire, on both brokers: the embedded amqtt broker and the real
Mosquitto managed by the service (password and ACL files plus the dynamic security plugin, as deployed).

One table (`SUBSCRIBE` and `PUBLISH`, for unit "me" next to unit "other") is checked against both. Subscribing:
the SUBACK code (1 granted, 0x80 refused). Publishing: what the service account, watching `fleet/#` on its own
connection, receives. Receiving: the service publishes on both units' downlink topics and "me", subscribed to
its own, gets only its own. tests/broker/test_acl.py, tests/fleet_service/mosquitto/test_mosquitto_acl.py and
test_mosquitto_share_attack.py hold the rest (client ids, Wills, retained messages, share-group starvation,
revocation, the service listener, plugin administration).
"""

from __future__ import annotations

import time

import pytest

from protocol.ids import SERVICE_USERNAME
from protocol.topics import UNIT_PUBLISHES, UNIT_RECEIVES, Kind
from tests.support.managed_mosquitto import SERVICE_SECRET, Probe, accepts, managed_stack
from tests.support.services import wait_for

GRANTED, REFUSED = 1, 0x80
REPLICA = "matrix-replica"
SID = "0123456789abcdef0123456789abcdef"  # a remote session's id


def subscribe_matrix(me: str, other: str) -> dict[str, int]:
    """Every filter a unit might try, with the SUBACK it must get."""
    rows = {f"fleet/{me}/{k.value}": GRANTED if k in UNIT_RECEIVES else REFUSED for k in Kind}
    rows |= {f"fleet/{other}/{k.value}": REFUSED for k in Kind}
    rows |= {
        f: REFUSED
        for f in (
            f"fleet/{me}/#",
            f"fleet/{me}/+",
            f"+/{me}/cmd",
            "fleet/+/cmd",
            "fleet/+/ack",
            "fleet/+/logs",
            "fleet/#",
            "#",
            "$share/fleet/fleet/+/logs",
            "$share/fleet/fleet/+/state",
            "$share/fleet/fleet/+/cmd/result",
            f"$share/fleet/fleet/{me}/cmd",
            "$share/x/fleet/+/state",
            "fleet/_events/+",
            f"fleet/_events/{REPLICA}",
            "$SYS/#",
            "$CONTROL/dynamic-security/#",
            "other/topic",
            # Remote sessions: the unit's own downlink filter only, never a session's topic or another unit's.
            f"fleet/{me}/term/{SID}/down",
            f"fleet/{me}/term/{SID}/up",
            f"fleet/{me}/term/+/up",
            f"fleet/{me}/term/#",
            f"fleet/{other}/term/+/down",
            "fleet/+/term/+/down",
            f"$share/fleet/fleet/{me}/term/+/down",
        )
    }
    rows[f"fleet/{me}/term/+/down"] = GRANTED
    return rows


def publish_matrix(me: str, other: str) -> dict[str, bool]:
    """Every fleet topic a unit might publish on, and whether the service must receive it."""
    rows = {f"fleet/{me}/{k.value}": k in UNIT_PUBLISHES for k in Kind}
    rows |= {f"fleet/{other}/{k.value}": False for k in Kind}
    rows |= {f"fleet/_events/{REPLICA}-forged": False, f"fleet/{me}": False, f"fleet/{me}/unknown": False}
    rows |= {
        f"fleet/{me}/term/{SID}/up": True,
        f"fleet/{me}/term/{SID}/down": False,
        f"fleet/{other}/term/{SID}/up": False,
    }
    return rows


def downlinks(unit: str) -> list[str]:
    """What the service sends a unit: its receive topics and a session's downlink."""
    return [*(f"fleet/{unit}/{k.value}" for k in UNIT_RECEIVES), f"fleet/{unit}/term/{SID}/down"]


def _check(suback, publish, observed, service_publish, me_received, me: str, other: str) -> list[str]:
    wrong = [
        f"SUBSCRIBE {f}: {code:#x}, expected {want:#x}"
        for f, want in subscribe_matrix(me, other).items()
        if (code := suback(f)) != want
    ]
    rows = publish_matrix(me, other)
    for topic in rows:
        publish(topic)
    got = observed()
    wrong += [
        f"PUBLISH {t}: {'delivered' if t in got else 'dropped'}" for t, want in rows.items() if (t in got) != want
    ]
    for unit in (other, me):
        for name in downlinks(unit):
            service_publish(name)
    want = set(downlinks(me))
    received = me_received()
    if received != want:
        wrong.append(f"RECEIVE: {sorted(received)}, expected {sorted(want)}")
    return wrong


def test_the_matrix_on_the_embedded_broker(mqtt):
    me, other = mqtt.wire("u1"), mqtt.wire("u2")
    service = mqtt.wire("svc")
    assert service.subscribe("fleet/#", "$share/fleet/fleet/+/logs", "fleet/_events/+") == [1, 1, 1]
    assert other.subscribe(*(f"fleet/u2/{k.value}" for k in UNIT_RECEIVES), "fleet/u2/term/+/down") == [1] * (
        len(UNIT_RECEIVES) + 1
    )

    def observed() -> set[str]:
        me.ping()  # everything published before the ping has been routed once PINGRESP is back
        return {m.topic for m in service.messages(0.5)}

    def me_received() -> set[str]:
        return {m.topic for m in me.messages(0.5)}

    wrong = _check(
        lambda f: me.subscribe(f)[0],
        lambda t: me.publish(t, b"{}", qos=1),
        observed,
        lambda t: service.publish(t, b"{}", qos=1),
        me_received,
        "u1",
        "u2",
    )
    assert not wrong, "\n".join(wrong)


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    with managed_stack(tmp_path_factory.mktemp("acl-matrix"), replica_id=REPLICA) as running:
        yield running


def test_the_matrix_on_mosquitto(managed):
    stack, broker = managed
    secrets = {}
    with stack.client() as api:
        for unit in ("mx-me", "mx-other"):
            r = api.post("/api/devices", json={"id": unit})
            assert r.status_code == 201, r.text
            secrets[unit] = r.json()["secret"]
    for unit, secret in secrets.items():
        wait_for(lambda u=unit, s=secret: accepts(broker.unit_port, u, s) == 0, timeout=5, what=f"{unit} accepted")
    me = Probe(broker.unit_port, "mx-me", secrets["mx-me"], "mx-me")
    other = Probe(broker.unit_port, "mx-other", secrets["mx-other"], "mx-other")
    service = Probe(broker.service_port, SERVICE_USERNAME, SERVICE_SECRET, f"matrix-observer-{time.monotonic_ns()}")
    try:
        assert service.suback("fleet/#") == GRANTED
        other.subscribe(*(f"fleet/mx-other/{k.value}" for k in UNIT_RECEIVES), "fleet/mx-other/term/+/down")
        service.drain(0.3)

        def observed() -> set[str]:
            return {t for t, _, _ in service.drain() if t != f"fleet/_events/{REPLICA}"}  # the replica's own events

        def me_received() -> set[str]:
            return {t for t, _, _ in me.drain()}

        wrong = _check(
            me.suback,
            lambda t: me.publish(t, b"{}"),
            observed,
            lambda t: service.publish(t, b"{}"),
            me_received,
            "mx-me",
            "mx-other",
        )
        assert not wrong, "\n".join(wrong)
    finally:
        for probe in (me, other, service):
            probe.close()
