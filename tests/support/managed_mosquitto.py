"""A Mosquitto whose unit credentials the fleet service manages (the scaled set-up of compose.yaml).

As deploy/mosquitto/mosquitto.conf: `per_listener_settings true`; the units' listener forces client id = username
(a unit cannot take over another unit's session), reads `passwd`/`acl` and loads the dynamic security plugin,
which the service manages through that listener (FLEET_MOSQUITTO_DYNSEC_URL); the service's listener reads
`service-passwd`/`service-acl` (the service account only) and does not rewrite client ids (replicas keep their
own persistent sessions). The files are written by `fleet mosquitto sync` logic before the broker starts, and
the broker's PID goes into the PID file the service signals (the file mode, FLEET_MOSQUITTO_AUTH=files).

With FLEET_MOSQUITTO_AUTH=dynsec (`plugin_stack`, `start_plugin_mosquitto`; compose.yaml's mode) the units'
listener has no password file: the plugin authenticates units and the service account there; its files are
written as `fleet mosquitto sync --offline` writes them, and no PID file exists.

The first listener of tests.support.services.Mosquitto's config (on `broker.port`) has no credentials here and
refuses every client; the two listeners above come after it, on ports chosen before the service starts.
"""

from __future__ import annotations

import contextlib
import glob
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from fleet_service.db.engine import make_engine, migrate
from fleet_service.mosquitto.admin import MosquittoFiles
from fleet_service.mosquitto.dynsec import DYNSEC_FILE, dynsec_target
from fleet_service.mosquitto.plugin_auth import PluginCredentials
from fleet_service.mosquitto.plugin_file import write_offline_files
from fleet_service.settings import BrokerTarget, ServiceSettings
from protocol import ProtocolError
from protocol.ids import SERVICE_USERNAME
from protocol.topics import parse
from tests.support.services import Mosquitto, free_port, have_mosquitto, require, wait_for
from tests.support.stack import StackThread, settings_for

SERVICE_SECRET = "service-secret-for-tests"
QUIET_S = 0.8  # how long "nothing arrives" is watched for
PLUGIN_NAME = "mosquitto_dynamic_security.so"


@dataclass
class ManagedMosquitto:
    broker: Mosquitto
    service_port: int
    files: Path
    units_port: int = 0

    @property
    def unit_port(self) -> int:
        return self.units_port or self.broker.port

    @property
    def password_file(self) -> Path:
        return self.files / "passwd"


def dynsec_plugin() -> str:
    """Where this machine's Mosquitto keeps the dynamic security plugin (Debian: /usr/lib/<arch>/)."""
    found = sorted(glob.glob(f"/usr/lib/*/{PLUGIN_NAME}")) + sorted(glob.glob(f"/usr/lib/{PLUGIN_NAME}"))
    if not found:
        raise RuntimeError(f"{PLUGIN_NAME} not found (Debian's mosquitto package ships it)")
    return found[0]


def settings_overrides(files: Path) -> dict[str, Any]:
    """Service settings for a managed Mosquitto whose files live in `files` (its ports picked here)."""
    service_port, unit_port = free_port(), free_port()
    return {
        "broker_url": f"mqtt://{SERVICE_USERNAME}:{SERVICE_SECRET}@127.0.0.1:{service_port}",
        "mosquitto_dynsec_url": f"mqtt://127.0.0.1:{unit_port}",
        "mosquitto_password_file": files / "passwd",
        "mosquitto_acl_file": files / "acl",
        "mosquitto_pid_file": files / "mosquitto.pid",
    }


def plugin_settings_overrides() -> dict[str, Any]:
    """Service settings for a Mosquitto whose dynamic security plugin holds the units' passwords: only URLs."""
    service_port, unit_port = free_port(), free_port()
    return {
        "broker_url": f"mqtt://{SERVICE_USERNAME}:{SERVICE_SECRET}@127.0.0.1:{service_port}",
        "mosquitto_auth": "dynsec",
        "mosquitto_dynsec_url": f"mqtt://127.0.0.1:{unit_port}",
    }


def plugin_broker_config(files: Path, unit_port: int, service_port: int) -> str:
    """deploy/mosquitto/mosquitto-dynsec.conf's listeners on loopback ports (no TLS)."""
    return (
        "per_listener_settings true\n"
        "message_size_limit 262144\n"
        f"listener {unit_port} 127.0.0.1\n"
        "use_username_as_clientid true\n"
        "allow_anonymous false\n"
        f"acl_file {files / 'acl'}\n"
        f"plugin {dynsec_plugin()}\n"
        f"plugin_opt_config_file {files / DYNSEC_FILE}\n"
        f"listener {service_port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {files / 'service-passwd'}\n"
        f"acl_file {files / 'service-acl'}\n"
    )


def write_plugin_files(settings: ServiceSettings, files: Path) -> list[str]:
    """As `fleet mosquitto sync --offline`: the broker's files from the (migrated) database -> units left out."""
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        units = PluginCredentials.from_settings(settings, engine).units()
        return write_offline_files(files / "acl", units, SERVICE_USERNAME, SERVICE_SECRET)[1]
    finally:
        engine.dispose()


def start_plugin_mosquitto(
    mosquitto_factory, settings: ServiceSettings, files: Path, extra: str = ""
) -> ManagedMosquitto:
    """Write the files (broker stopped), then start Mosquitto on them. No PID file: nothing signals it."""
    write_plugin_files(settings, files)
    service_port = BrokerTarget(settings.broker_url).port
    unit_port = BrokerTarget(settings.mosquitto_dynsec_url).port
    broker = mosquitto_factory(extra + plugin_broker_config(files, unit_port, service_port))
    return ManagedMosquitto(broker, service_port, files, unit_port)


def start_managed_mosquitto(
    tmp_path: Path, mosquitto_factory, settings: ServiceSettings, extra_config: str = ""
) -> ManagedMosquitto:
    """Write the files from the (migrated) database, start Mosquitto on them, record its PID."""
    files = Path(settings.mosquitto_password_file).parent
    service_port = BrokerTarget(settings.broker_url).port
    dynsec = dynsec_target(settings)
    unit_port = dynsec.port if dynsec else free_port()
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        MosquittoFiles.from_settings(settings, engine).sync()
    finally:
        engine.dispose()
    plugin = f"plugin {dynsec_plugin()}\nplugin_opt_config_file {files / DYNSEC_FILE}\n" if dynsec else ""
    broker = mosquitto_factory(
        "per_listener_settings true\n"
        "message_size_limit 262144\n" + extra_config + f"listener {unit_port} 127.0.0.1\n"
        "use_username_as_clientid true\n"
        "allow_anonymous false\n"
        f"password_file {files / 'passwd'}\n"
        f"acl_file {files / 'acl'}\n" + plugin + f"listener {service_port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {files / 'service-passwd'}\n"
        f"acl_file {files / 'service-acl'}\n"
    )
    Path(settings.mosquitto_pid_file).write_text(f"{broker.proc.pid}\n")
    return ManagedMosquitto(broker, service_port, files, unit_port)


class Probe:
    """A raw MQTT 3.1.1 client that records everything: CONNACK, SUBACK codes, messages, disconnects."""

    def __init__(
        self, port: int, username: str | None, password: str | None, client_id: str, clean_session: bool = True
    ) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.connack: int | None = None
        self.disconnected = threading.Event()
        self._subacks: dict[int, list[int]] = {}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean_session
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.05, 0.1)  # a refused probe is closed at once, not after paho's 1 s
        self.client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc.value)
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload, m.retain))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subacks.__setitem__(mid, [x.value for x in codes])
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, timeout=5, what=f"CONNACK for {client_id}")

    def suback(self, topic_filter: str) -> int:
        """Subscribe at QoS 1; the broker's answer (1 granted, 0x80 refused)."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        return wait_for(lambda: self._subacks.get(mid), timeout=5, what=f"SUBACK for {topic_filter}")[0]

    def subscribe(self, *filters: str) -> None:
        for f in filters:
            self.suback(f)

    def publish(self, topic: str, payload: bytes | dict, retain: bool = False) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)

    def drain(self, wait: float = QUIET_S, unit_topics_only: bool = False) -> list[tuple[str, bytes, bool]]:
        time.sleep(wait)
        out = []
        while not self.messages.empty():
            message = self.messages.get()
            if unit_topics_only and not _is_unit_topic(message[0]):
                continue  # e.g. the service's own cross-replica events under fleet/_events/
            out.append(message)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _is_unit_topic(name: str) -> bool:
    try:
        parse(name)
    except ProtocolError:
        return False
    return True


@contextlib.contextmanager
def managed_stack(tmp: Path, **overrides: Any) -> Iterator[tuple[StackThread, ManagedMosquitto]]:
    """One managed Mosquitto and one service replica connected to it (SQLite), for a test module."""
    require(have_mosquitto(), "the mosquitto binary is not installed (apt install mosquitto)")
    settings = settings_for(tmp, **overrides, **settings_overrides(tmp / "mosquitto-files"))
    started: list[Mosquitto] = []

    def factory(extra: str) -> Mosquitto:
        started.append(Mosquitto(workdir=tmp / "broker", extra_config=extra).start())
        return started[-1]

    broker = start_managed_mosquitto(tmp, factory, settings)
    try:
        with StackThread(settings) as stack:
            wait_for(lambda: stack.ctx.link.connected.is_set(), what="service connected to Mosquitto")
            yield stack, broker
    finally:
        for m in started:
            m.stop()


@contextlib.contextmanager
def plugin_stack(tmp: Path, extra: str = "", **overrides: Any) -> Iterator[tuple[StackThread, ManagedMosquitto]]:
    """One Mosquitto whose dynamic security plugin holds the units' passwords and one replica (SQLite)."""
    require(have_mosquitto(), "the mosquitto binary is not installed (apt install mosquitto)")
    settings = settings_for(tmp, **overrides, **plugin_settings_overrides())
    started: list[Mosquitto] = []

    def factory(config: str) -> Mosquitto:
        started.append(Mosquitto(workdir=tmp / "broker", extra_config=config).start())
        return started[-1]

    broker = start_plugin_mosquitto(factory, settings, tmp / "mosquitto-files", extra)
    try:
        with StackThread(settings) as stack:
            wait_for(lambda: stack.ctx.link.connected.is_set(), what="service connected to Mosquitto")
            yield stack, broker
    finally:
        for m in started:
            m.stop()


def accepts(port: int, username: str, password: str | None, client_id: str | None = None) -> int:
    """The CONNACK code Mosquitto answers for these credentials (0 = accepted); disconnects at once."""
    result: dict[str, int] = {}
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{username}", protocol=mqtt.MQTTv311
    )
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
