"""A running fleet (service + broker + database) in each supported combination."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
import pytest

from fleet_service.mosquitto_acl import acl_text
from protocol.ids import SERVICE_USERNAME
from tests.support.services import mosquitto_passwd, wait_for
from tests.support.stack import StackThread, settings_for

SERVICE_SECRET = "service-secret-for-tests"


@dataclass
class Fleet:
    stack: StackThread
    api: httpx.Client
    mqtt_port: int
    _register: object = None
    secrets: dict[str, str] = field(default_factory=dict)

    def enroll(self, device_id: str, **body) -> str:
        r = self.api.post("/api/devices", json={"id": device_id, **body})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        self.secrets[device_id] = secret
        if self._register:
            self._register(device_id, secret)
        return secret

    def status(self, device_id: str) -> dict:
        return self.api.get(f"/api/devices/{device_id}/status").json()


def _mosquitto_broker(tmp_path, mosquitto_factory):
    passwd = tmp_path / "passwd"
    users = {SERVICE_USERNAME: SERVICE_SECRET}
    mosquitto_passwd(passwd, users)
    (tmp_path / "acl").write_text(acl_text())
    broker = mosquitto_factory(
        f"allow_anonymous false\npassword_file {passwd}\nacl_file {tmp_path / 'acl'}\nmessage_size_limit 262144\n"
    )

    def register(device_id: str, secret: str) -> None:
        users[device_id] = secret
        mosquitto_passwd(passwd, users)
        broker.reload()
        time.sleep(0.3)

    return broker, register


@pytest.fixture(params=["embedded-sqlite", "mosquitto-sqlite", "mosquitto-postgres"])
def fleet(request, tmp_path, mosquitto_factory):
    broker_kind, db_kind = request.param.split("-")
    overrides = {}
    if db_kind == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    register = None
    if broker_kind == "mosquitto":
        broker, register = _mosquitto_broker(tmp_path, mosquitto_factory)
        overrides["broker_url"] = f"mqtt://{SERVICE_USERNAME}:{SERVICE_SECRET}@127.0.0.1:{broker.port}"
    with StackThread(settings_for(tmp_path, **overrides)) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), what="service connected to the broker")
        port = stack.mqtt_port if broker_kind == "embedded" else broker.port
        with stack.client() as api:
            yield Fleet(stack, api, port, register)
