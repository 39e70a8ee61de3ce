"""`fleet mosquitto sync --offline` and the shipped deploy/mosquitto/mosquitto-dynsec.conf, with real processes.

Units enrolled while nothing told the plugin (or before a move from the file mode) have only their stored `$7$`
hash left. With the broker stopped, the command writes the plugin's file from those hashes; the broker then starts
on the shipped configuration (TLS) and every such unit logs in with its current secret, unrotated. Once the broker
runs, the same command reconciles over the network (TLS, certificate checked) and `fleet device add` reaches the
plugin before it prints the secret.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from sqlmodel import Session

from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.mosquitto.models import BrokerCredential
from protocol.ids import SERVICE_USERNAME
from tests.support.managed_mosquitto import SERVICE_SECRET, accepts, dynsec_plugin
from tests.support.services import free_port, have_mosquitto, require, wait_port

REFUSED = 135
SHIPPED = Path(__file__).parents[3] / "deploy/mosquitto/mosquitto-dynsec.conf"


def _certificate(folder: Path) -> None:
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
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(folder / "privkey.pem"),
            "-out",
            str(folder / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )


def _tls_connack(port: int, ca: Path, username: str, password: str, subscribe: str | None = None) -> int:
    """The CONNACK code over TLS, or with `subscribe` the SUBACK code of that filter."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(ca))
    client.username_pw_set(username, password)
    result: dict[str, int] = {}
    client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc.value)
    client.on_subscribe = lambda c, u, mid, codes, p: result.setdefault("sub", codes[0].value)
    client.connect("localhost", port)
    deadline = time.monotonic() + 5
    while ("rc" not in result or (subscribe and "sub" not in result)) and time.monotonic() < deadline:
        client.loop(timeout=0.05)
        if subscribe and result.get("rc") == 0 and "asked" not in result:
            result["asked"] = client.subscribe(subscribe, qos=1)[0]
    client.disconnect()
    return result.get("sub" if subscribe else "rc", -1)


def test_offline_sync_writes_the_plugin_file_from_stored_hashes_and_the_shipped_conf_serves_it(tmp_path):
    require(have_mosquitto() and shutil.which("openssl") is not None, "mosquitto and openssl are needed")
    for sub in ("auth", "data", "certs"):
        (tmp_path / sub).mkdir()
    _certificate(tmp_path / "certs")
    database_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = make_engine(database_url)
    migrate(engine)
    secrets = {d: enroll(engine, d)[1] for d in ("off-a", "off-b", "off-odd")}  # the plugin never heard of them
    with Session(engine) as s:  # a hash the plugin's file cannot hold (not $7$): left out, named
        row = s.get(BrokerCredential, "off-odd")
        assert row is not None
        row.password_hash = "$6$not-pbkdf2"
        s.add(row)
        s.commit()
    engine.dispose()
    unit_port, service_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLEET_LOG_LEVEL": "WARNING",
        "FLEET_DATABASE_URL": database_url,
        "FLEET_BROKER_URL": f"mqtt://{SERVICE_USERNAME}:{SERVICE_SECRET}@127.0.0.1:{service_port}",
        "FLEET_MOSQUITTO_AUTH": "dynsec",
        "FLEET_MOSQUITTO_DYNSEC_URL": f"mqtts://localhost:{unit_port}",
        "FLEET_MOSQUITTO_ACL_FILE": str(tmp_path / "auth/acl"),
        "SSL_CERT_FILE": str(tmp_path / "certs/fullchain.pem"),  # the replicas check the listener's certificate
    }

    def fleet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fleet_cli.main", *args], capture_output=True, text=True, env=env, timeout=60
        )

    done = fleet("mosquitto", "sync", "--offline")
    assert done.returncode == 0, done.stderr
    assert "off-odd" in done.stdout and "start the broker" in done.stdout
    written = json.loads((tmp_path / "auth/dynamic-security.json").read_text())
    assert {c["username"] for c in written["clients"]} == {SERVICE_USERNAME, "off-a", "off-b"}
    assert not (tmp_path / "auth/passwd").exists()
    for name in ("acl", "service-acl", "service-passwd"):
        assert (tmp_path / "auth" / name).exists(), name
    for plain in (*secrets.values(), SERVICE_SECRET):
        assert plain not in done.stdout + done.stderr
        assert not any(plain in p.read_text() for p in (tmp_path / "auth").iterdir())

    conf = ("user root\n" if os.geteuid() == 0 else "") + SHIPPED.read_text().replace(
        "/fleet-mosquitto/", f"{tmp_path}/auth/"
    ).replace("/mosquitto/data/", f"{tmp_path}/data/").replace("/mosquitto/certs/", f"{tmp_path}/certs/").replace(
        "/usr/lib/mosquitto_dynamic_security.so", dynsec_plugin()
    ).replace("log_dest stdout", f"log_dest file {tmp_path}/mosquitto.log").replace(
        "listener 8883\n", f"listener {unit_port} 127.0.0.1\n"
    ).replace("listener 1884\n", f"listener {service_port} 127.0.0.1\n")
    assert "password_file" not in conf.split(f"listener {unit_port}")[1].split("listener")[0]
    (tmp_path / "mosquitto.conf").write_text(conf)

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_port(unit_port)
        wait_port(service_port)
        return proc

    ca = tmp_path / "certs/fullchain.pem"
    proc = start()
    try:
        for device_id in ("off-a", "off-b"):  # their stored hashes, as written: no rotation needed
            assert _tls_connack(unit_port, ca, device_id, secrets[device_id]) == 0
            assert _tls_connack(unit_port, ca, device_id, secrets[device_id] + "x") == REFUSED
        assert _tls_connack(unit_port, ca, "off-odd", secrets["off-odd"]) == REFUSED
        assert _tls_connack(unit_port, ca, "off-a", secrets["off-a"], subscribe="$share/fleet/fleet/+/logs") == 0x80
        assert _tls_connack(unit_port, ca, "off-a", secrets["off-a"], subscribe="fleet/off-a/cmd") == 1
        assert accepts(service_port, SERVICE_USERNAME, SERVICE_SECRET, client_id="fleet-service-x") == 0
        assert accepts(service_port, "off-a", secrets["off-a"], client_id="fleet-service-x") == REFUSED

        again = fleet("mosquitto", "sync", "--offline")  # the broker runs: nothing written, reconciled instead
        assert again.returncode == 0, again.stderr
        assert "no files written" in again.stdout and "off-odd" in again.stderr
        online = fleet("mosquitto", "sync")
        assert online.returncode == 0, online.stderr
        assert "reconciled" in online.stdout and "off-odd" in online.stderr

        added = fleet("device", "add", "off-new")  # reaches the plugin before the secret is printed
        assert added.returncode == 0, added.stderr
        new_secret = added.stdout.strip().splitlines()[-1]
        assert _tls_connack(unit_port, ca, "off-new", new_secret) == 0
    finally:
        proc.terminate()
        proc.wait(10)
    proc = start()  # the plugin saved what it was told: it survives a restart
    try:
        assert _tls_connack(unit_port, ca, "off-new", new_secret) == 0
        assert _tls_connack(unit_port, ca, "off-a", secrets["off-a"]) == 0
    finally:
        proc.terminate()
        proc.wait(10)
