"""A real broker per test, in its own event-loop thread so tests can drive it with blocking clients.

FLEET_TEST_BROKER=plain runs the same tests against plain amqtt 0.12.1 with our auth and ACL plugins but
none of our broker fixes; FLEET_TEST_BROKER=permissive against plain amqtt with an allow-everyone auth
plugin and an allow-everything topic plugin. The defect regressions in test_defects.py fail in both
modes; that is how they were shown to detect each defect. Neither mode is part of a normal run.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import pytest
from amqtt.broker import Broker
from amqtt.plugins.base import BaseTopicPlugin

from broker import EmbeddedBroker, StaticCredentialStore, load_settings
from broker.config import BrokerSettings
from broker.server import amqtt_config
from protocol.ids import SERVICE_USERNAME
from protocol.secrets import hash_secret
from tests.broker.wire_client import WireClient
from tests.support.services import free_port

SERVICE_SECRET = "service-secret-for-tests"
UNITS = {f"u{i}": f"secret-u{i}" for i in range(1, 5)} | {f"p{i}": f"secret-p{i}" for i in range(4)}
MODE = os.environ.get("FLEET_TEST_BROKER", "fleet")
PLAIN = MODE in ("plain", "permissive")


class AllowAllTopics(BaseTopicPlugin):
    """A topic plugin that allows everything (amqtt still runs its topic-check path)."""

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        return True


@pytest.fixture(scope="session")
def unit_hashes() -> dict[str, str]:
    return {unit: hash_secret(secret) for unit, secret in UNITS.items()}


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="broker-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class PlainBroker:
    """Plain amqtt with our plugins, shaped like EmbeddedBroker for the defect tests."""

    def __init__(self, settings: BrokerSettings, credentials: StaticCredentialStore) -> None:
        self.port = free_port()
        config = amqtt_config(settings, {"default": self.port}, credentials)
        if MODE == "permissive":
            config["plugins"] = {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                "tests.broker.conftest.AllowAllTopics": {},
            }
        self._broker = Broker(config)

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.shutdown()

    async def disconnect(self, client_id: str) -> bool:
        await self._broker.sessions[client_id][1].handle_connection_closed()
        return True

    async def revoke(self, device_id: str) -> bool:
        return await self.disconnect(device_id)


@dataclass
class Running:
    broker: EmbeddedBroker | PlainBroker
    store: Any
    loop: LoopThread
    clients: list[WireClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.broker.port

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run(coro)

    def wire(self, client_id: str | None = None, *, password: str | None = None, **kw: Any) -> WireClient:
        """A connected raw client: the service account when client_id is None or starts with 'svc'."""
        client = WireClient(self.port)
        self.clients.append(client)
        cid = client_id or "svc"
        if cid.startswith("svc"):
            rc = client.connect(cid, SERVICE_USERNAME, password or SERVICE_SECRET, **kw)
        else:
            rc = client.connect(cid, cid, password or UNITS[cid], **kw)
        assert rc == 0, f"CONNECT of {cid} refused with {rc}"
        return client

    def paho(
        self,
        client_id: str,
        *,
        keepalive: int = 30,
        max_inflight: int | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> paho.Client:
        """A connected paho client with its network loop running."""
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        if client_id.startswith("svc"):
            client.username_pw_set(SERVICE_USERNAME, SERVICE_SECRET)
        else:
            client.username_pw_set(client_id, UNITS[client_id])
        if max_inflight is not None:
            client.max_inflight_messages_set(max_inflight)
        if will is not None:
            client.will_set(*will)
        connected = threading.Event()
        client.on_connect = lambda c, u, f, rc, p: connected.set()
        client.connect("127.0.0.1", self.port, keepalive=keepalive)
        client.loop_start()
        assert connected.wait(10), f"paho client {client_id} did not connect"
        return client


@pytest.fixture
def start_broker(unit_hashes: dict[str, str]) -> Iterator[Callable[..., Running]]:
    """Start a broker on a free port with the test units; `start_broker(**settings)` overrides settings."""
    started: list[Running] = []

    def start(credentials: Any = None, **overrides: Any) -> Running:
        loop = LoopThread()
        store = credentials or StaticCredentialStore(SERVICE_SECRET, unit_hashes)
        settings = load_settings(**{"mqtt_host": "127.0.0.1", "mqtt_port": 0, **overrides})

        async def make() -> EmbeddedBroker | PlainBroker:
            b = PlainBroker(settings, store) if PLAIN else EmbeddedBroker(settings, store)
            await b.start()
            return b

        running = Running(loop.run(make()), store, loop)
        started.append(running)
        return running

    yield start
    for running in started:
        for client in running.clients:
            client.close()
        running.call(running.broker.stop())
        running.loop.close()


@pytest.fixture
def mqtt(start_broker: Callable[..., Running]) -> Running:
    """A broker with default settings."""
    return start_broker()
