"""The per-unit topic ACL on a real Mosquitto whose password and ACL files the service manages.

One service and one Mosquitto subprocess for the module; units are enrolled, rotated and revoked through
the API and must get exactly the access the contract gives them, at runtime, without a broker restart.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.mosquitto.admin import MosquittoFiles, password_hash, password_matches
from fleet_service.settings import BrokerTarget
from protocol.ids import SERVICE_USERNAME
from tests.support.managed_mosquitto import (
    QUIET_S,
    SERVICE_SECRET,
    Probe,
    accepts,
    dynsec_plugin,
    managed_stack,
)
from tests.support.services import free_port, have_mosquitto, require, wait_for, wait_port

REFUSED = 135  # paho's reason code for CONNACK "not authorized" (MQTT 3.1.1 return code 5)


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    with managed_stack(tmp_path_factory.mktemp("mosquitto-acl")) as running:
        yield running


@pytest.fixture
def observer(managed):
    """The service account on its own listener, watching every unit topic (retained ones from before skipped)."""
    _, broker = managed
    probe = Probe(broker.service_port, SERVICE_USERNAME, SERVICE_SECRET, f"observer-{time.monotonic_ns()}")
    probe.subscribe("fleet/#")
    probe.drain(0.3)
    yield probe
    probe.close()


def _enroll(stack, device_id: str) -> str:
    with stack.client() as api:
        r = api.post("/api/devices", json={"id": device_id})
        assert r.status_code == 201, r.text
        return r.json()["secret"]


def _unit(broker, device_id: str, secret: str, client_id: str | None = None) -> Probe:
    """Connect as a unit; right after an enrollment Mosquitto may still be reloading, so retry briefly."""
    deadline = time.monotonic() + 5
    while True:
        probe = Probe(broker.unit_port, device_id, secret, client_id or device_id)
        if probe.connack == 0:
            return probe
        probe.close()
        assert time.monotonic() < deadline, f"{device_id} refused (CONNACK {probe.connack})"
        time.sleep(0.05)


def test_our_password_entries_are_mosquittos_own_format(tmp_path):
    require(have_mosquitto(), "mosquitto_passwd is not installed (apt install mosquitto)")
    path = tmp_path / "passwd"
    path.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(path), "unit-x", "the secret"], check=True, capture_output=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert password_matches("the secret", theirs) and not password_matches("another", theirs)
    ours = password_hash("the secret")
    iterations, salt = theirs.split("$")[2:4]
    assert ours.split("$")[:3] == theirs.split("$")[:3]  # "", "7", iterations
    assert password_hash("the secret", salt=base64.b64decode(salt), iterations=int(iterations)) == theirs


def test_a_unit_receives_only_its_own_topics_even_with_wildcards(managed, observer):
    stack, broker = managed
    secret_a = _enroll(stack, "acl-a")
    a = _unit(broker, "acl-a", secret_a)
    b = _unit(broker, "acl-b", _enroll(stack, "acl-b"))
    b.subscribe("fleet/acl-b/cmd", "fleet/acl-b/config/desired")
    # The dynamic security plugin refuses these (test_mosquitto_share_attack.py); the read ACL filters delivery too.
    a.subscribe(
        "fleet/#",
        "#",
        "+/+/cmd",
        "fleet/+/config/desired",
        "fleet/acl-b/cmd",
        "fleet/acl-b/relay/down",
        "$SYS/#",
        "fleet/acl-a/cmd",
    )
    with stack.client() as api:
        assert api.post("/api/devices/acl-b/restart").status_code == 202
        assert api.put("/api/devices/acl-b/config", json={"camera": "b-only"}).status_code == 200
        assert api.post("/api/devices/acl-a/commands", json={"name": "ping"}).status_code == 202
    wait_for(lambda: b.messages.qsize() >= 2, what="b got its command and config")
    got = a.drain()
    assert [t for t, _, _ in got] == ["fleet/acl-a/cmd"], got  # its own command, nothing of b's
    assert sorted(t for t, _, _ in b.drain(0)) == ["fleet/acl-b/cmd", "fleet/acl-b/config/desired"]
    a.close()

    late = _unit(broker, "acl-a", secret_a)  # a new session subscribing after b's config was retained
    late.subscribe("#", "fleet/acl-b/config/desired", "fleet/+/config/desired")
    assert late.drain() == []  # b's retained config is not handed to a on subscribe either
    late.close()
    b.close()


def test_a_unit_cannot_publish_for_others_or_on_its_own_inbound_topics(managed, observer):
    stack, broker = managed
    a = _unit(broker, "pub-a", _enroll(stack, "pub-a"))
    _enroll(stack, "pub-b")  # enrolled, never connected
    victim = _unit(broker, "pub-c", _enroll(stack, "pub-c"))
    victim.subscribe("fleet/pub-c/cmd", "fleet/pub-c/config/desired", "fleet/pub-c/relay/down")
    birth = {
        "v": 1,
        "online": True,
        "ts": int(time.time() * 1000),
        "session": "spoof",
        "agent_version": "x",
        "software_version": "evil",
        "boot_id": "x",
    }
    command = {"v": 1, "id": "c" * 32, "name": "reboot", "args": {}, "ts": 1, "expires_at": 2**41}
    for topic, payload in [
        ("fleet/pub-b/state", birth),  # pretend b is online
        ("fleet/pub-b/heartbeat", {"v": 1, "ts": 1, "seq": 1}),
        ("fleet/pub-c/cmd", command),  # command another unit
        ("fleet/pub-c/config/desired", {"v": 1, "version": 99, "config": {"evil": True}}),
        ("fleet/pub-c/relay/down", b"offer"),
        ("fleet/pub-a/cmd", command),  # its own inbound topics are the service's to write
        ("fleet/pub-a/config/desired", {"v": 1, "version": 99, "config": {}}),
        ("fleet/pub-a/relay/down", b"offer"),
        ("fleet/x", b"?"),
        ("other/topic", b"?"),
    ]:
        a.publish(topic, payload, retain=topic.endswith("state") or topic.endswith("desired"))
    a.publish("fleet/pub-a/heartbeat", {"v": 1, "ts": 1, "seq": 1, "uptime_s": 1})  # allowed: the control
    seen = observer.drain(unit_topics_only=True)
    assert [t for t, _, _ in seen] == ["fleet/pub-a/heartbeat"], seen
    assert victim.drain(0) == []
    with stack.client() as api:
        assert api.get("/api/devices/pub-b/status").json()["online"] is False
    a.close()
    victim.close()


def test_a_unit_cannot_take_over_another_units_connection(managed, observer):
    stack, broker = managed
    secret_a = _enroll(stack, "own-a")
    b = _unit(broker, "own-b", _enroll(stack, "own-b"))
    b.subscribe("fleet/own-b/cmd")
    thief = _unit(broker, "own-a", secret_a, client_id="own-b")  # the broker makes its client id "own-a"
    time.sleep(QUIET_S)
    assert not b.disconnected.is_set()
    with stack.client() as api:
        api.post("/api/devices/own-b/commands", json={"name": "ping"})
    wait_for(lambda: not b.messages.empty(), what="b still gets its commands")
    assert thief.drain(0) == []
    thief.close()
    b.close()


def test_anonymous_unknown_and_wrong_credentials_are_refused(managed):
    stack, broker = managed
    secret = _enroll(stack, "cred-a")
    port = broker.unit_port
    assert accepts(port, "cred-a", secret) == 0
    assert accepts(port, "cred-a", None) == REFUSED  # username without password
    assert accepts(port, "cred-a", secret[:-1] + ("x" if secret[-1] != "x" else "y")) == REFUSED
    assert accepts(port, "cred-a", "") == REFUSED
    assert accepts(port, "no-such-unit", secret) == REFUSED
    assert accepts(port, SERVICE_USERNAME, secret) == REFUSED  # a unit secret is not the service's
    assert accepts(port, SERVICE_USERNAME, "wrong") == REFUSED
    anonymous = Probe(port, None, None, "anonymous-probe")
    assert anonymous.connack != 0
    anonymous.close()


def test_rotation_replaces_the_secret_and_cuts_the_old_connection(managed):
    stack, broker = managed
    old = _enroll(stack, "rot-a")
    connected = _unit(broker, "rot-a", old)
    with stack.client() as api:
        new = api.post("/api/devices/rot-a/rotate-secret").json()["secret"]
    assert connected.disconnected.wait(5), "the connection made with the old secret was not closed"
    assert accepts(broker.unit_port, "rot-a", old) == REFUSED
    wait_for(lambda: accepts(broker.unit_port, "rot-a", new) == 0, timeout=5, what="new secret accepted")
    connected.close()


def test_revoked_unit_is_kicked_at_once_and_cannot_reconnect(managed, observer):
    stack, broker = managed
    secret = _enroll(stack, "rev-a")
    unit = _unit(broker, "rev-a", secret)
    start = time.monotonic()
    with stack.client() as api:
        assert api.delete("/api/devices/rev-a").status_code == 204
    assert unit.disconnected.wait(5), "the revoked unit is still connected"
    assert time.monotonic() - start < 3
    assert accepts(broker.unit_port, "rev-a", secret) == REFUSED
    assert "rev-a:" not in broker.password_file.read_text()
    unit.close()


def test_a_unit_that_claims_itself_can_connect(managed):
    stack, broker = managed
    with stack.client() as api:
        token = api.post("/api/claim-tokens", json={"ttl_s": 600}).json()["token"]
    r = httpx.post(stack.url + "/api/devices/claim", json={"token": token, "id": "claim-a"}, timeout=15)
    assert r.status_code == 201, r.text
    wait_for(
        lambda: accepts(broker.unit_port, "claim-a", r.json()["secret"]) == 0,
        timeout=5,
        what="claimed unit accepted by Mosquitto",
    )


def test_oversized_payloads_are_dropped_by_the_broker(managed, observer):
    stack, broker = managed
    unit = _unit(broker, "big-a", _enroll(stack, "big-a"))
    unit.publish("fleet/big-a/logs", b"x" * 300_000)
    unit.publish("fleet/big-a/heartbeat", {"v": 1, "ts": 1, "seq": 1})
    assert [t for t, _, _ in observer.drain(unit_topics_only=True)] == ["fleet/big-a/heartbeat"]
    unit.close()


def _fleet(stack, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FLEET_LOG_LEVEL": "WARNING",
        "FLEET_DATABASE_URL": stack.settings.database_url,
        "FLEET_BROKER_URL": stack.settings.broker_url,
        "FLEET_MOSQUITTO_PASSWORD_FILE": str(stack.settings.mosquitto_password_file),
        "FLEET_MOSQUITTO_ACL_FILE": str(stack.settings.mosquitto_acl_file),
        "FLEET_MOSQUITTO_PID_FILE": str(stack.settings.mosquitto_pid_file),
    }
    return subprocess.run(
        [sys.executable, "-m", "fleet_cli.main", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_files_are_rebuilt_from_the_database_by_any_writer(managed):
    stack, broker = managed
    secret = _enroll(stack, "file-a")
    wait_for(lambda: accepts(broker.unit_port, "file-a", secret) == 0, timeout=5, what="reloaded after enrollment")
    broker.password_file.write_text(f"{SERVICE_USERNAME}:broken\n")  # damaged by hand
    done = _fleet(stack, "mosquitto", "sync")
    assert done.returncode == 0, done.stderr
    assert f"{SERVICE_USERNAME}:$7$" in broker.password_file.read_text()
    wait_for(lambda: accepts(broker.unit_port, "file-a", secret) == 0, timeout=5, what="restored entry accepted")
    assert stack.ctx.link.connected.is_set()

    added = _fleet(stack, "device", "add", "cli-unit")  # another process enrolls while the service runs
    assert added.returncode == 0, added.stderr
    cli_secret = added.stdout.strip().splitlines()[-1]
    wait_for(lambda: accepts(broker.unit_port, "cli-unit", cli_secret) == 0, timeout=5, what="CLI unit accepted")
    assert accepts(broker.unit_port, "file-a", secret) == 0  # the service's units are still in the file


def test_the_shipped_mosquitto_conf_starts_and_serves_units_over_tls(tmp_path):
    """deploy/mosquitto/mosquitto.conf (the file mode), with its paths and ports moved into tmp_path."""
    require(have_mosquitto() and shutil.which("openssl") is not None, "mosquitto and openssl are needed")
    for sub in ("auth", "data", "certs"):
        (tmp_path / sub).mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tmp_path / "certs/privkey.pem"),
            "-out",
            str(tmp_path / "certs/fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(engine)
    _, secret = enroll(engine, "tls-unit")
    unit_port, service_port = free_port(), free_port()
    # Mosquitto is not running yet: the plugin's file is written directly (no PID file means no broker).
    MosquittoFiles(
        engine,
        tmp_path / "auth/passwd",
        tmp_path / "auth/acl",
        tmp_path / "auth/mosquitto.pid",
        SERVICE_USERNAME,
        SERVICE_SECRET,
        dynsec=BrokerTarget(f"mqtt://127.0.0.1:{unit_port}"),
    ).sync()
    engine.dispose()
    shipped = (Path(__file__).parents[3] / "deploy/mosquitto/mosquitto.conf").read_text()
    conf = ("user root\n" if os.geteuid() == 0 else "") + shipped.replace(
        "/fleet-mosquitto/", f"{tmp_path}/auth/"
    ).replace("/mosquitto/data/", f"{tmp_path}/data/").replace("/mosquitto/certs/", f"{tmp_path}/certs/").replace(
        "/usr/lib/mosquitto_dynamic_security.so", dynsec_plugin()
    ).replace("log_dest stdout", f"log_dest file {tmp_path}/mosquitto.log").replace(
        "listener 8883\n", f"listener {unit_port} 127.0.0.1\n"
    ).replace("listener 1884\n", f"listener {service_port} 127.0.0.1\n")
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_port(unit_port)
        wait_port(service_port)

        def tls_connack(username: str, password: str, client_id: str, subscribe: str | None = None) -> int:
            """The CONNACK code, or with `subscribe` the SUBACK code of that filter."""
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
            client.tls_set(ca_certs=str(tmp_path / "certs/fullchain.pem"))
            client.tls_insecure_set(True)  # the test certificate names localhost, we dial 127.0.0.1
            client.username_pw_set(username, password)
            result: dict[str, int] = {}
            client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc.value)
            client.on_subscribe = lambda c, u, mid, codes, p: result.setdefault("sub", codes[0].value)
            client.connect("127.0.0.1", unit_port)
            deadline = time.monotonic() + 5
            while ("rc" not in result or (subscribe and "sub" not in result)) and time.monotonic() < deadline:
                client.loop(timeout=0.05)
                if subscribe and result.get("rc") == 0 and "asked" not in result:
                    result["asked"] = client.subscribe(subscribe, qos=1)[0]
            client.disconnect()
            return result.get("sub" if subscribe else "rc", -1)

        assert tls_connack("tls-unit", secret, "someone-else") == 0
        assert tls_connack("tls-unit", "wrong", "tls-unit") == REFUSED
        assert tls_connack("tls-unit", secret, "tls-unit", subscribe="fleet/tls-unit/cmd") == 1
        assert tls_connack("tls-unit", secret, "tls-unit", subscribe="$share/fleet/fleet/+/logs") == 0x80
        assert accepts(service_port, SERVICE_USERNAME, SERVICE_SECRET, client_id="fleet-service-x") == 0
        assert accepts(service_port, "tls-unit", secret, client_id="fleet-service-x") == REFUSED
        log = (tmp_path / "mosquitto.log").read_text()
        assert "as tls-unit (" in log and "as someone-else" not in log  # client id forced to the username
    finally:
        proc.terminate()
        proc.wait(10)
