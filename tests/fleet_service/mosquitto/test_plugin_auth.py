"""FLEET_MOSQUITTO_AUTH=dynsec on a real Mosquitto 2 with its real dynamic security plugin: the plugin holds the
units' passwords, the service changes them over the network (no password file on the units' listener, no PID
file, no SIGHUP), and enroll, rotate and revoke take effect before the API answers, live connections included.

One broker and one replica (SQLite) for the module; each test uses its own unit ids.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest
from sqlmodel import Session

from fleet_service.devices.enrollment import enroll
from fleet_service.mosquitto.models import BrokerCredential
from fleet_service.mosquitto.plugin_auth import FRESH_MS, PluginAuthManager, stamp
from fleet_service.settings import BrokerTarget
from protocol.ids import SERVICE_USERNAME, now_ms
from tests.support.live_unit import LiveUnit
from tests.support.managed_mosquitto import SERVICE_SECRET, Probe, accepts, plugin_stack
from tests.support.services import free_port, wait_for

REFUSED = 135  # paho's reason code for CONNACK "not authorized" (MQTT 3.1.1 return code 5)
CUT_WITHIN_S = 3.0  # from the request; measured 0.07 to 0.8 s on a loaded 2-core machine (slow hash included)
SLACK_S = 0.25  # the cut is made before the answer; paho may notice it a little after


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    # `log_type all`: the plugin logs each command it runs; the secrets must not be among them
    with plugin_stack(tmp_path_factory.mktemp("plugin-auth"), extra="log_type all\n") as running:
        yield running


def _enroll(stack, device_id: str) -> str:
    with stack.client() as api:
        r = api.post("/api/devices", json={"id": device_id})
        assert r.status_code == 201, r.text
        return r.json()["secret"]


def _control(stack, *commands: dict) -> list[dict]:
    """Commands to the plugin as the service account, as an operator with mosquitto_ctrl would send them."""
    return stack.ctx.plugin_auth.admin.run([list(commands)])


def test_the_units_listener_has_no_password_file_and_the_service_logs_in_through_the_plugin(plugin):
    stack, broker = plugin
    units_listener = (
        broker.broker.config_path.read_text().split(f"listener {broker.unit_port} ")[1].split("listener")[0]
    )
    assert "password_file" not in units_listener and "mosquitto_dynamic_security.so" in units_listener
    assert stack.settings.mosquitto_pid_file is None and stack.settings.mosquitto_password_file is None
    assert not (broker.files / "passwd").exists() and not (broker.files / "mosquitto.pid").exists()
    assert accepts(broker.unit_port, SERVICE_USERNAME, SERVICE_SECRET) == 0
    assert accepts(broker.unit_port, SERVICE_USERNAME, "wrong") == REFUSED
    assert accepts(broker.unit_port, "nobody-here", "x") == REFUSED


def test_an_enrolled_unit_logs_in_with_its_secret_only(plugin):
    stack, broker = plugin
    secret = _enroll(stack, "pa-enrolled")
    assert accepts(broker.unit_port, "pa-enrolled", secret) == 0  # no wait: the plugin had it before the answer
    assert accepts(broker.unit_port, "pa-enrolled", secret + "x") == REFUSED
    assert accepts(broker.unit_port, "pa-enrolled", None) == REFUSED
    other = _enroll(stack, "pa-enrolled-2")
    assert accepts(broker.unit_port, "pa-enrolled", other) == REFUSED  # another unit's secret
    # the service listener never takes a unit
    assert accepts(broker.service_port, "pa-enrolled", secret) == REFUSED


def test_a_rotation_cuts_the_live_connection_and_only_the_new_secret_works(plugin):
    stack, broker = plugin
    old = _enroll(stack, "pa-rotated")
    unit = LiveUnit(broker.unit_port, "pa-rotated", old)
    try:
        started = time.monotonic()
        with stack.client() as api:
            r = api.post("/api/devices/pa-rotated/rotate-secret")
        answered = time.monotonic() - started
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        cut = unit.wait_cut(started)
        print(f"\nrotate: connection cut {cut * 1000:.1f} ms after the request, answer after {answered * 1000:.1f} ms")
        assert cut < CUT_WITHIN_S and cut <= answered + SLACK_S
        wait_for(lambda: len(unit.refusals) >= 2, what="paho's reconnects with the old secret refused")
        assert set(unit.refusals) == {REFUSED} and not unit.connected.is_set()
        assert accepts(broker.unit_port, "pa-rotated", old) == REFUSED
        unit.use(new)
        wait_for(unit.connected.is_set, what="reconnected with the new secret")
        assert accepts(broker.unit_port, "pa-rotated", new) == 0
    finally:
        unit.close()
    probe = Probe(broker.unit_port, "pa-rotated", new, "pa-rotated")
    try:  # still its own role after the rotation
        assert probe.suback("fleet/pa-rotated/cmd") == 1 and probe.suback("$share/fleet/fleet/+/logs") == 0x80
    finally:
        probe.close()


def test_a_revocation_cuts_the_live_connection_and_refuses_it_for_good(plugin):
    stack, broker = plugin
    secret = _enroll(stack, "pa-revoked")
    unit = LiveUnit(broker.unit_port, "pa-revoked", secret)
    try:
        started = time.monotonic()
        with stack.client() as api:
            assert api.delete("/api/devices/pa-revoked").status_code == 204
        answered = time.monotonic() - started
        cut = unit.wait_cut(started)
        print(f"\nrevoke: connection cut {cut * 1000:.1f} ms after the request, answer after {answered * 1000:.1f} ms")
        assert cut < CUT_WITHIN_S and cut <= answered + SLACK_S
        wait_for(lambda: len(unit.refusals) >= 2, what="reconnects refused")
        assert not unit.connected.is_set()
    finally:
        unit.close()
    assert accepts(broker.unit_port, "pa-revoked", secret) == REFUSED
    clients = _control(stack, {"command": "listClients"})[0]["data"]["clients"]
    assert "pa-revoked" not in clients


def test_a_unit_subscribes_and_publishes_only_as_itself(plugin):
    stack, broker = plugin
    secret = _enroll(stack, "pa-acl-a")
    _enroll(stack, "pa-acl-b")
    observer = Probe(broker.service_port, SERVICE_USERNAME, SERVICE_SECRET, f"observer-{time.monotonic_ns()}")
    observer.subscribe("fleet/pa-acl-a/#", "fleet/pa-acl-b/#")
    unit = Probe(broker.unit_port, "pa-acl-a", secret, "pa-acl-a")
    try:
        assert unit.suback("fleet/pa-acl-a/cmd") == 1
        for refused in ("fleet/pa-acl-b/cmd", "fleet/#", "$share/fleet/fleet/+/logs", "$CONTROL/dynamic-security/#"):
            assert unit.suback(refused) == 0x80, refused
        unit.publish("fleet/pa-acl-b/heartbeat", {"v": 1, "ts": 1, "seq": 1})
        unit.publish("fleet/pa-acl-a/cmd", b"{}")
        unit.publish("fleet/pa-acl-a/heartbeat", {"v": 1, "ts": 1, "seq": 1})
        got = [t for t, _, _ in observer.drain()]
        assert got == ["fleet/pa-acl-a/heartbeat"], got
    finally:
        unit.close()
        observer.close()


def test_the_plugin_takes_no_prehashed_password(plugin):
    """Mosquitto 2.0.11: createClient hashes whatever `password` it is given; salt and iterations are ignored. So
    a unit the plugin lost cannot be given its stored hash back over the network."""
    stack, broker = plugin
    secret = "the-plain-secret"
    from fleet_service.mosquitto.admin import password_hash
    from fleet_service.mosquitto.plugin_file import hash_fields

    stored = password_hash(secret)
    fields = hash_fields(stored)
    answers = _control(
        stack,
        {"command": "createClient", "username": "pa-prehash-1", **fields},
        {"command": "createClient", "username": "pa-prehash-2", "password": stored},
    )
    assert [a.get("error") for a in answers] == [None, None]
    try:
        assert accepts(broker.unit_port, "pa-prehash-1", secret) == REFUSED
        assert accepts(broker.unit_port, "pa-prehash-1", fields["password"]) == 0  # the digest became a password
        assert accepts(broker.unit_port, "pa-prehash-2", secret) == REFUSED
    finally:
        _control(
            stack,
            {"command": "deleteClient", "username": "pa-prehash-1"},
            {"command": "deleteClient", "username": "pa-prehash-2"},
        )


def test_a_plugin_out_of_reach_fails_the_request_and_changes_nothing(plugin):
    stack, broker = plugin
    secret = _enroll(stack, "pa-unreached")
    admin = stack.ctx.plugin_auth.admin
    real = admin.target
    admin.target = BrokerTarget(f"mqtt://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        with stack.client() as api:
            rotated = api.post("/api/devices/pa-unreached/rotate-secret")
            enrolled = api.post("/api/devices", json={"id": "pa-unreached-new"})
            deleted = api.delete("/api/devices/pa-unreached")
            listed = api.get("/api/devices/pa-unreached-new")
    finally:
        admin.target = real
    assert (rotated.status_code, enrolled.status_code, deleted.status_code) == (503, 503, 503)
    assert "secret" not in rotated.text and "dynamic security" in rotated.json()["detail"]
    assert listed.status_code == 404  # the enrollment was not stored
    assert accepts(broker.unit_port, "pa-unreached", secret) == 0  # neither rotated nor revoked
    with stack.client() as api:
        assert api.get("/api/devices/pa-unreached").status_code == 200
        assert api.post("/api/devices", json={"id": "pa-unreached-new"}).status_code == 201  # the id is free


def test_the_reconcile_brings_the_plugin_back_in_line_and_names_units_to_rotate(plugin, caplog):
    stack, broker = plugin
    creds = stack.ctx.plugin_auth
    lost = _enroll(stack, "pa-rc-lost")
    disabled = _enroll(stack, "pa-rc-disabled")
    roleless = _enroll(stack, "pa-rc-roleless")
    stale = _enroll(stack, "pa-rc-stale")
    old_mark = stamp("$7$101$x$y", now_ms() - 2 * FRESH_MS)
    _control(
        stack,
        {"command": "deleteClient", "username": "pa-rc-lost"},  # lost behind our back
        {"command": "disableClient", "username": "pa-rc-disabled"},
        {"command": "removeClientRole", "username": "pa-rc-roleless", "rolename": "fleet-unit-pa-rc-roleless"},
        # a password that is not the stored one, set long enough ago (a rotation whose commit failed)
        {"command": "modifyClient", "username": "pa-rc-stale", "password": "other", "textdescription": old_mark},
        # leftovers of enrollments that never committed: an old one, and one that may still commit
        {"command": "createClient", "username": "pa-rc-leftover", "password": "x", "textdescription": old_mark},
        {
            "command": "createClient",
            "username": "pa-rc-pending",
            "password": "x",
            "textdescription": stamp("$7$", now_ms()),
        },
        {"command": "createClient", "username": "operator-admin", "password": "x"},  # not ours
    )
    assert accepts(broker.unit_port, "pa-rc-disabled", disabled) == REFUSED
    with caplog.at_level(logging.WARNING, logger="fleet_service.mosquitto.plugin_auth"):
        found = creds.reconcile()
    assert found.lost == ["pa-rc-lost"] and found.stale == ["pa-rc-stale"]
    assert "pa-rc-lost" in creds.need_rotate and "pa-rc-stale" in creds.need_rotate
    assert "rotate" in caplog.text and "pa-rc-lost" in caplog.text and "pa-rc-stale" in caplog.text
    assert accepts(broker.unit_port, "pa-rc-disabled", disabled) == 0
    assert (
        accepts(broker.unit_port, "pa-rc-stale", stale) == REFUSED
        and accepts(broker.unit_port, "pa-rc-stale", "other") == REFUSED
    )
    probe = Probe(broker.unit_port, "pa-rc-roleless", roleless, "pa-rc-roleless")
    try:
        assert probe.suback("$share/fleet/fleet/+/logs") == 0x80  # its role is back
    finally:
        probe.close()
    clients = set(_control(stack, {"command": "listClients"})[0]["data"]["clients"])
    assert "pa-rc-leftover" not in clients and {"pa-rc-pending", "operator-admin"} <= clients
    assert creds.reconcile().groups == []  # nothing more to do (the pending one waits)

    with stack.client() as api:  # what the log says to do
        new_lost = api.post("/api/devices/pa-rc-lost/rotate-secret").json()["secret"]
        new_stale = api.post("/api/devices/pa-rc-stale/rotate-secret").json()["secret"]
    assert (
        accepts(broker.unit_port, "pa-rc-lost", new_lost) == 0
        and accepts(broker.unit_port, "pa-rc-lost", lost) == REFUSED
    )
    assert accepts(broker.unit_port, "pa-rc-stale", new_stale) == 0
    found = creds.reconcile()
    assert "pa-rc-lost" not in found.need_rotate and "pa-rc-stale" not in found.need_rotate
    _control(stack, {"command": "deleteClient", "username": "operator-admin"})


def test_a_unit_enrolled_without_the_plugin_is_named_for_rotation(plugin):
    stack, broker = plugin
    _, secret = enroll(stack.ctx.engine, "pa-db-only")  # e.g. `fleet device add` without FLEET_MOSQUITTO_AUTH
    assert accepts(broker.unit_port, "pa-db-only", secret) == REFUSED
    assert "pa-db-only" in stack.ctx.plugin_auth.reconcile().lost
    with Session(stack.ctx.engine) as s:
        assert s.get(BrokerCredential, "pa-db-only") is not None  # its hash is there for an offline sync


def test_no_secret_reaches_the_logs(plugin, caplog):
    stack, broker = plugin
    with caplog.at_level(logging.DEBUG):
        secret = _enroll(stack, "pa-quiet")
        with stack.client() as api:
            rotated = api.post("/api/devices/pa-quiet/rotate-secret").json()["secret"]
    stack.ctx.plugin_auth.reconcile()
    broker_log = (broker.broker.workdir / "mosquitto.log").read_text()
    assert "createClient | username=pa-quiet" in broker_log  # the plugin does log its commands
    for plain in (secret, rotated):
        assert plain not in caplog.text and plain not in broker_log


def test_a_unit_claiming_itself_is_in_the_plugin_before_it_gets_its_secret(plugin):
    stack, broker = plugin
    with stack.client() as api:
        token = api.post("/api/claim-tokens", json={"ttl_s": 600}).json()["token"]
    admin = stack.ctx.plugin_auth.admin
    real = admin.target
    admin.target = BrokerTarget(f"mqtt://127.0.0.1:{free_port()}")
    try:
        with httpx.Client(base_url=stack.url, timeout=15) as anonymous:
            refused = anonymous.post("/api/devices/claim", json={"token": token, "id": "pa-claimed"})
    finally:
        admin.target = real
    assert refused.status_code == 503  # nothing stored: the token is still good
    with httpx.Client(base_url=stack.url, timeout=15) as anonymous:
        r = anonymous.post("/api/devices/claim", json={"token": token, "id": "pa-claimed"})
    assert r.status_code == 201, r.text
    assert accepts(broker.unit_port, "pa-claimed", r.json()["secret"]) == 0


def test_the_background_reconcile_runs_and_retries_after_a_failure(plugin, caplog):
    stack, broker = plugin
    secret = _enroll(stack, "pa-bg")
    _control(stack, {"command": "disableClient", "username": "pa-bg"})
    assert accepts(broker.unit_port, "pa-bg", secret) == REFUSED
    creds = stack.ctx.plugin_auth
    manager = PluginAuthManager(creds)

    async def briefly(interval_s: float, retry_s: float) -> None:
        task = asyncio.create_task(manager.run(interval_s=interval_s, retry_s=retry_s))
        await asyncio.sleep(0.6)
        task.cancel()

    admin, real = creds.admin, creds.admin.target
    admin.target = BrokerTarget(f"mqtt://127.0.0.1:{free_port()}")
    failures = creds.failures
    try:
        with caplog.at_level(logging.ERROR, logger="fleet_service.mosquitto.plugin_auth"):
            asyncio.run(briefly(interval_s=300, retry_s=0.1))  # fails, then tries again soon
    finally:
        admin.target = real
    assert creds.failures - failures >= 3 and "not reconciled" in caplog.text
    assert accepts(broker.unit_port, "pa-bg", secret) == REFUSED
    asyncio.run(briefly(interval_s=300, retry_s=0.1))
    assert accepts(broker.unit_port, "pa-bg", secret) == 0  # re-enabled by the pass at start
    with stack.client() as api:
        text = api.get("/metrics").text
    assert "fleet_mosquitto_units_need_rotate" in text and "fleet_mosquitto_sync_failures_total" in text


@pytest.mark.parametrize(
    "command",
    [
        {"command": "setClientPassword", "password": "changed"},
        {"command": "modifyClient", "textdescription": "only the description"},
        {"command": "disableClient"},
        {"command": "deleteClient"},
    ],
    ids=lambda c: c["command"] + ("-text" if "textdescription" in c else ""),
)
def test_the_plugin_closes_a_live_connection_on_each_change_to_its_client(plugin, command):
    """Mosquitto 2.0.11's plugin, measured: what the service's enroll, rotate and revoke rely on."""
    stack, broker = plugin
    device_id = f"pa-kick-{command['command'].lower()}-{len(command)}"
    unit = LiveUnit(broker.unit_port, device_id, _enroll(stack, device_id))
    try:
        started = time.monotonic()
        assert _control(stack, {**command, "username": device_id})[0].get("error") is None
        assert unit.wait_cut(started) < CUT_WITHIN_S
    finally:
        unit.close()
