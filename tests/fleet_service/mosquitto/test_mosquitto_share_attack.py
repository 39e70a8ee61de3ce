"""Units attacking the replicas on the real Mosquitto 2.0.11, set up as deploy/mosquitto/mosquitto.conf sets it up.

1. A unit must not join the replicas' `$share` group (Mosquitto would deal it a share of every unit's messages and
   drop them after the publishers' PUBACK), nor subscribe to anything but its own downlink topics.
   Mosquitto's `acl_file` never checks SUBSCRIBE in 2.0 (`mosquitto_acl_check_default` returns success for it), so
   the dynamic security plugin on the units' listener does, with one role per unit that the service keeps.
7. The service listener takes the service account only: a unit's credentials are refused there, so a unit cannot
   take over a replica's client id.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.mosquitto.acl import dynsec_config, role_name
from fleet_service.mosquitto.admin import MosquittoFiles
from fleet_service.mosquitto.dynsec import DYNSEC_FILE
from fleet_service.settings import BrokerTarget
from protocol.ids import SERVICE_USERNAME, now_ms
from tests.support.managed_mosquitto import SERVICE_SECRET, Probe, accepts, managed_stack
from tests.support.services import free_port, wait_for

REFUSED = 135  # paho's reason code for CONNACK "not authorized"
SUB_REFUSED = 0x80
RECORDS = 60
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"  # where the dynamic security plugin takes commands


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    with managed_stack(tmp_path_factory.mktemp("mosquitto-share"), replica_id="replica-a") as running:
        yield running


def _enroll(stack, device_id: str) -> str:
    with stack.client() as api:
        r = api.post("/api/devices", json={"id": device_id})
        assert r.status_code == 201, r.text
        return r.json()["secret"]


def _unit(broker, device_id: str, secret: str) -> Probe:
    wait_for(lambda: accepts(broker.unit_port, device_id, secret) == 0, timeout=5, what=f"{device_id} accepted")
    unit = Probe(broker.unit_port, device_id, secret, device_id)
    assert unit.connack == 0
    return unit


def _send_logs(unit: Probe, device_id: str) -> None:
    """RECORDS log batches of one record, each PUBACKed by the broker before the next is sent."""
    for i in range(RECORDS):
        unit.publish(
            f"fleet/{device_id}/logs",
            {"v": 1, "records": [{"id": f"r{i}", "ts": now_ms(), "level": "info", "msg": f"line {i}"}]},
        )


def _stored(stack, device_id: str, expected: int, timeout: float = 15.0) -> int:
    """How many of the unit's log records the service stored, once `expected` arrived or nothing more does."""
    deadline, last, last_change = time.monotonic() + timeout, -1, time.monotonic()
    with stack.client() as api:
        while time.monotonic() < deadline:
            count = len(api.get(f"/api/devices/{device_id}/logs", params={"limit": 1000}).json()["items"])
            if count >= expected:
                return count
            if count != last:
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > 3:
                return count  # nothing more arrives: the rest was dealt to someone who dropped it
            time.sleep(0.1)
    return last


def _own(device_id: str) -> list[str]:
    return [f"fleet/{device_id}/{kind}" for kind in ("cmd", "config/desired", "relay/down", "ack")]


def _attacks(me: str, victim: str) -> list[str]:
    return [
        "$share/fleet/fleet/+/logs",
        "$share/fleet/fleet/+/state",
        "$share/fleet/fleet/+/cmd/result",
        "$share/x/fleet/+/state",
        f"$share/fleet/fleet/{me}/cmd",
        "fleet/+/logs",
        "fleet/#",
        "#",
        "+/+/cmd",
        f"fleet/{victim}/cmd",
        f"fleet/{victim}/logs",
        f"fleet/{me}/logs",
        f"fleet/{me}/#",
        "fleet/+/ack",
        "$SYS/#",
        "$CONTROL/dynamic-security/#",
        "fleet/_events/+",
    ]


def test_a_unit_joins_no_share_group_and_subscribes_only_its_own_downlink_topics(managed):
    stack, broker = managed
    attacker = _unit(broker, "share-att", _enroll(stack, "share-att"))
    victim_secret = _enroll(stack, "share-vic")
    attacks = _attacks("share-att", "share-vic")
    assert {f: attacker.suback(f) for f in attacks} == {f: SUB_REFUSED for f in attacks}
    assert {f: attacker.suback(f) for f in _own("share-att")} == {f: 1 for f in _own("share-att")}

    # A unit cannot administer the dynamic security plugin to lift its own restrictions.
    attacker.publish(
        DYNSEC_TOPIC,
        {
            "commands": [
                {"command": "setDefaultACLAccess", "acls": [{"acltype": "subscribe", "allow": True}]},
                {"command": "deleteClient", "username": "share-att"},
            ]
        },
    )
    time.sleep(0.3)
    assert attacker.suback("$share/fleet/fleet/+/logs") == SUB_REFUSED

    victim = _unit(broker, "share-vic", victim_secret)
    _send_logs(victim, "share-vic")
    assert _stored(stack, "share-vic", RECORDS) == RECORDS  # the replica got every one: none dealt to the attacker
    assert [m[0] for m in attacker.drain()] == []  # and the attacker got none either
    attacker.close()
    victim.close()


def test_a_persistent_session_cannot_keep_a_share_either(managed):
    """clean session off: the subscription would outlive the connection and keep eating a share while offline."""
    stack, broker = managed
    secret = _enroll(stack, "share-keep")
    wait_for(lambda: accepts(broker.unit_port, "share-keep", secret) == 0, timeout=5, what="share-keep accepted")
    keeper = Probe(broker.unit_port, "share-keep", secret, "share-keep", clean_session=False)
    assert keeper.suback("$share/fleet/fleet/+/logs") == SUB_REFUSED
    keeper.close()
    victim = _unit(broker, "share-vic2", _enroll(stack, "share-vic2"))
    _send_logs(victim, "share-vic2")
    assert _stored(stack, "share-vic2", RECORDS) == RECORDS
    victim.close()


def test_a_revoked_unit_re_enrolled_under_its_id_gets_exactly_its_own_topics(managed):
    stack, broker = managed
    first = _unit(broker, "share-again", _enroll(stack, "share-again"))
    with stack.client() as api:
        assert api.delete("/api/devices/share-again").status_code == 204
    assert first.disconnected.wait(5), "the revoked unit is still connected"
    first.close()
    again = _unit(broker, "share-again", _enroll(stack, "share-again"))
    assert again.suback("fleet/share-again/cmd") == 1
    assert again.suback("$share/fleet/fleet/+/logs") == SUB_REFUSED
    again.close()


def test_the_service_listener_takes_the_service_account_only(managed):
    stack, broker = managed
    secret = _enroll(stack, "svc-probe")
    wait_for(lambda: accepts(broker.unit_port, "svc-probe", secret) == 0, timeout=5, what="svc-probe accepted")
    replica = Probe(broker.service_port, SERVICE_USERNAME, SERVICE_SECRET, "_fleet-service-replica-z")
    assert replica.connack == 0
    port = broker.service_port
    assert accepts(port, "svc-probe", secret) == REFUSED
    assert accepts(port, "svc-probe", secret, client_id="_fleet-service-replica-z") == REFUSED  # a replica's id
    assert accepts(port, "svc-probe", secret, client_id="_fleet-service-replica-a") == REFUSED  # the live one's
    time.sleep(0.3)
    assert not replica.disconnected.is_set(), "a unit took over a replica's session"
    assert stack.ctx.link.connected.is_set()
    replica.close()


def test_the_service_account_on_the_units_listener_reaches_no_fleet_topic(managed):
    """In dynamic security mode it logs in there to manage the plugin, and may do nothing else."""
    stack, broker = managed
    unit = _unit(broker, "svc-spy", _enroll(stack, "svc-spy"))
    unit.suback("fleet/svc-spy/cmd")
    spy = Probe(broker.unit_port, SERVICE_USERNAME, SERVICE_SECRET, "whatever")
    assert spy.connack == 0
    spy.suback("fleet/#")
    spy.publish(
        "fleet/svc-spy/cmd", {"v": 1, "id": "c" * 32, "name": "reboot", "args": {}, "ts": 1, "expires_at": 2**41}
    )
    unit.publish("fleet/svc-spy/heartbeat", {"v": 1, "ts": 1, "seq": 1})
    assert spy.drain() == []
    assert unit.drain(0) == []
    spy.close()
    unit.close()


def _dynsec_clients(broker) -> dict[str, dict]:
    data = json.loads((broker.files / DYNSEC_FILE).read_text())
    return {c["username"]: c for c in data["clients"]}


def test_a_revoked_unit_is_disabled_in_the_plugin_and_deleted_on_the_next_pass(managed):
    stack, broker = managed
    unit = _unit(broker, "share-gone", _enroll(stack, "share-gone"))
    with stack.client() as api:
        assert api.delete("/api/devices/share-gone").status_code == 204
    assert unit.disconnected.wait(5)
    unit.close()
    assert "share-gone:" not in broker.password_file.read_text()  # out of passwd first (SIGHUP), then disabled
    assert _dynsec_clients(broker)["share-gone"].get("disabled") is True
    _enroll(stack, "share-next")  # any later pass deletes it
    assert "share-gone" not in _dynsec_clients(broker)
    roles = [r["rolename"] for r in json.loads((broker.files / DYNSEC_FILE).read_text())["roles"]]
    assert role_name("share-gone") not in roles and role_name("share-next") in roles


def _files(tmp_path, dynsec: BrokerTarget | None, pid_file: Path | None = None):
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(engine)
    files = MosquittoFiles(
        engine,
        tmp_path / "auth/passwd",
        tmp_path / "auth/acl",
        pid_file,
        SERVICE_USERNAME,
        SERVICE_SECRET,
        dynsec=dynsec,
    )
    return engine, files


def test_a_unit_the_plugin_does_not_know_is_not_let_in(tmp_path, caplog):
    """Fail closed: with the broker up (no way to tell it is not) but its plugin out of reach, a new unit waits."""
    engine, files = _files(tmp_path, BrokerTarget(f"mqtt://127.0.0.1:{free_port()}"))  # nothing listens there
    enroll(engine, "known-a")
    files.dynsec_file.parent.mkdir(parents=True)
    files.dynsec_file.write_text(json.dumps(dynsec_config(["known-a"])))  # what the running plugin saved
    enroll(engine, "new-b")
    files.sync()
    users = [line.split(":")[0] for line in files.password_file.read_text().splitlines()]
    assert users == [SERVICE_USERNAME, "known-a"]
    assert files.failures == 1 and "cannot log in yet" in caplog.text
    engine.dispose()


def test_without_the_plugin_the_files_alone_are_kept_as_before(tmp_path, caplog):
    engine, files = _files(tmp_path, None)
    enroll(engine, "file-a")
    files.sync()
    users = [line.split(":")[0] for line in files.password_file.read_text().splitlines()]
    assert users == [SERVICE_USERNAME, "file-a"]
    assert "topic readwrite fleet/#" in files.acl_file.read_text()  # also a single-listener broker keeps working
    assert [line.split(":")[0] for line in files.service_password_file.read_text().splitlines()] == [SERVICE_USERNAME]
    assert not files.dynsec_file.exists()
    assert "cannot refuse a unit's subscriptions" in caplog.text
    engine.dispose()


def test_a_unit_given_more_in_the_plugin_is_put_back_to_its_own_role(managed):
    """Whatever widened a unit's plugin entry (another role here), the next pass takes it away again."""
    stack, broker = managed
    secret = _enroll(stack, "share-wide")
    admin = Probe(broker.unit_port, SERVICE_USERNAME, SERVICE_SECRET, "admin")
    assert admin.suback(DYNSEC_TOPIC + "/response") == 1
    admin.publish(
        DYNSEC_TOPIC,
        {
            "commands": [
                {
                    "command": "createRole",
                    "rolename": "open",
                    "acls": [{"acltype": "subscribePattern", "topic": "#", "allow": True}],
                },
                {"command": "addClientRole", "username": "share-wide", "rolename": "open", "priority": 10},
            ]
        },
    )
    wait_for(lambda: not admin.messages.empty(), what="the plugin's answer")
    admin.close()
    wide = _unit(broker, "share-wide", secret)
    assert wide.suback("$share/fleet/fleet/+/logs") == 1  # the widened entry lets it in: the set-up works
    wide.close()
    stack.ctx.mosquitto.files.sync()  # the periodic pass (any change runs one too)
    assert _dynsec_clients(broker)["share-wide"]["roles"] == [{"rolename": role_name("share-wide")}]
    again = _unit(broker, "share-wide", secret)
    assert again.suback("$share/fleet/fleet/+/logs") == SUB_REFUSED
    again.close()
