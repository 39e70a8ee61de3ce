"""`fleet service` as an operator runs it: external Mosquitto (managed files) and PostgreSQL, a unit end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from fleet_service.settings import ServiceSettings
from protocol.topics import Kind
from tests.support.managed_mosquitto import settings_overrides, start_managed_mosquitto
from tests.support.services import free_port, wait_for
from tests.support.stack import ADMIN_TOKEN
from tests.support.unit import RawUnit


def test_fleet_service_process_on_mosquitto_and_postgres(tmp_path, mosquitto_factory, postgres_url):
    overrides = settings_overrides(tmp_path / "mosquitto-files")
    settings = ServiceSettings(data_dir=tmp_path / "data", database_url=postgres_url, **overrides)
    broker = start_managed_mosquitto(tmp_path, mosquitto_factory, settings)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "FLEET_MOSQUITTO_PASSWORD_FILE": str(overrides["mosquitto_password_file"]),
            "FLEET_MOSQUITTO_ACL_FILE": str(overrides["mosquitto_acl_file"]),
            "FLEET_MOSQUITTO_PID_FILE": str(overrides["mosquitto_pid_file"]),
            "FLEET_MOSQUITTO_DYNSEC_URL": overrides["mosquitto_dynsec_url"],
            "FLEET_ADMIN_TOKEN": ADMIN_TOKEN,
        }
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet_cli.main",
            "service",
            "--broker-url",
            overrides["broker_url"],
            "--database-url",
            postgres_url,
            "--http-port",
            str(port),
            "--host",
            "127.0.0.1",
            "--replica-id",
            "r1",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        health = wait_for(lambda: _health(url), timeout=60, what="fleet service healthy")
        assert health == {"status": "ok", "service": "fleet", "broker": "connected", "database": "ok"}
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=15)
        secret = api.post("/api/devices", json={"id": "venue-9"}).json()["secret"]
        unit = wait_for(lambda: _connect(broker.unit_port, secret), timeout=10, what="Mosquitto accepts the unit")
        unit.birth("3.0.0")
        status = wait_for(
            lambda: (s := api.get("/api/devices/venue-9/status").json())["online"] and s,
            what="unit online through the external broker",
        )
        assert status["software_version"] == "3.0.0"
        unit.publish(Kind.LOGS, {"v": 1, "records": [{"id": "1", "ts": 1, "level": "info", "msg": "hello"}]})
        wait_for(lambda: api.get("/api/devices/venue-9/logs").json()["items"], what="log stored in PostgreSQL")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert ADMIN_TOKEN not in out


def _health(url: str):
    try:
        r = httpx.get(f"{url}/health", timeout=2)
    except httpx.HTTPError:
        return None
    return r.status_code == 200 and r.json()


def _connect(port: int, secret: str):
    try:
        return RawUnit(port, "venue-9", secret).connect(timeout=2)
    except AssertionError:
        return None
