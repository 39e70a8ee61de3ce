"""A running fleet (service + broker + database) in each supported combination.

With Mosquitto the service manages the broker's password and ACL files itself (the file mode; compose.yaml
uses the plugin mode, tested in tests/fleet_service/mosquitto/test_plugin_*.py): an
enrollment through the API is all a unit needs before it connects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import pytest

from fleet_service.db.engine import make_engine, migrate
from tests.support.managed_mosquitto import ManagedMosquitto, accepts, settings_overrides, start_managed_mosquitto
from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for


@dataclass
class Fleet:
    stack: StackThread
    api: httpx.Client
    mqtt_port: int
    mosquitto: ManagedMosquitto | None = None
    secrets: dict[str, str] = field(default_factory=dict)

    def enroll(self, device_id: str, **body) -> str:
        r = self.api.post("/api/devices", json={"id": device_id, **body})
        assert r.status_code == 201, r.text
        secret = r.json()["secret"]
        self.secrets[device_id] = secret
        if self.mosquitto is not None:
            # The service has rewritten the file and sent SIGHUP; Mosquitto reloads a moment later.
            wait_for(
                lambda: accepts(self.mqtt_port, device_id, secret) == 0,
                timeout=5,
                what=f"Mosquitto accepting {device_id}",
            )
        return secret

    def status(self, device_id: str) -> dict:
        return self.api.get(f"/api/devices/{device_id}/status").json()


@pytest.fixture(params=["embedded-sqlite", "mosquitto-sqlite", "mosquitto-postgres"])
def fleet(request, tmp_path, mosquitto_factory):
    broker_kind, db_kind = request.param.split("-")
    overrides = {}
    if db_kind == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    if broker_kind == "mosquitto":
        overrides.update(settings_overrides(tmp_path / "mosquitto-files"))
    settings = settings_for(tmp_path, **overrides)
    managed = start_managed_mosquitto(tmp_path, mosquitto_factory, settings) if broker_kind == "mosquitto" else None
    with StackThread(settings) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="service connected to the broker")
        port = stack.mqtt_port if managed is None else managed.unit_port
        with stack.client() as api:
            yield Fleet(stack, api, port, managed)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    """A migrated database engine, on SQLite and on a fresh PostgreSQL database."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()
