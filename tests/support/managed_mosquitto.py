"""A Mosquitto whose password and ACL files the fleet service manages (the scaled set-up of compose.yaml).

Two listeners, as in deploy/mosquitto/mosquitto.conf: the units' one forces client id = username (a unit
cannot take over another unit's session), the service's internal one does not (replicas keep their own
persistent sessions). The files are written by `fleet mosquitto sync` logic before the broker starts, and
the broker's PID goes into the PID file the service signals, the way the compose wrapper writes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from fleet_service.config import BrokerTarget, ServiceSettings
from fleet_service.db import make_engine, migrate
from fleet_service.mosquitto_admin import MosquittoFiles
from protocol.ids import SERVICE_USERNAME
from tests.support.services import Mosquitto, free_port

SERVICE_SECRET = "service-secret-for-tests"


@dataclass
class ManagedMosquitto:
    broker: Mosquitto
    service_port: int
    files: Path

    @property
    def unit_port(self) -> int:
        return self.broker.port

    @property
    def password_file(self) -> Path:
        return self.files / "passwd"


def settings_overrides(files: Path) -> dict[str, Any]:
    """Service settings for a managed Mosquitto whose files live in `files` (its internal port picked here)."""
    service_port = free_port()
    return {
        "broker_url": f"mqtt://{SERVICE_USERNAME}:{SERVICE_SECRET}@127.0.0.1:{service_port}",
        "mosquitto_password_file": files / "passwd",
        "mosquitto_acl_file": files / "acl",
        "mosquitto_pid_file": files / "mosquitto.pid",
    }


def start_managed_mosquitto(tmp_path: Path, mosquitto_factory, settings: ServiceSettings,
                            extra_config: str = "") -> ManagedMosquitto:
    """Write the files from the (migrated) database, start Mosquitto on them, record its PID."""
    files = Path(settings.mosquitto_password_file).parent
    service_port = BrokerTarget(settings.broker_url).port
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        MosquittoFiles.from_settings(settings, engine).sync()
    finally:
        engine.dispose()
    broker = mosquitto_factory(
        "use_username_as_clientid true\n"  # applies to the units' listener, the first one in the file
        "allow_anonymous false\n"
        f"password_file {files / 'passwd'}\n"
        f"acl_file {files / 'acl'}\n"
        "message_size_limit 262144\n"
        + extra_config
        + f"listener {service_port} 127.0.0.1\n"
    )
    Path(settings.mosquitto_pid_file).write_text(f"{broker.proc.pid}\n")
    return ManagedMosquitto(broker, service_port, files)


def accepts(port: int, username: str, password: str | None, client_id: str | None = None) -> int:
    """The CONNACK code Mosquitto answers for these credentials (0 = accepted); disconnects at once."""
    result: dict[str, int] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{username}",
                         protocol=mqtt.MQTTv311)
    if password is not None:
        client.username_pw_set(username, password)

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        result["rc"] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    deadline = time.monotonic() + 5
    try:  # driven by hand: the background loop would sit out a reconnect delay after a refusal
        while "rc" not in result and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    finally:
        client.disconnect()
    if "rc" not in result:
        raise AssertionError(f"no CONNACK for {username} within 5 s")
    return result["rc"]
