"""Run the real fleet service (and its embedded broker) on a background event loop for a test."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from fleet_service.runtime import Running, start, stop
from fleet_service.settings import ServiceSettings

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


class StackThread:
    """`fleet up` / `fleet service` in-process, on its own loop in a thread, served on real sockets."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.running: Running | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fleet-stack")

    def __enter__(self) -> StackThread:
        self._thread.start()
        self.running = self.call(start(self.settings), timeout=60)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.running is not None:
            self.call(stop(self.running), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def ctx(self):
        return self.running.app.state.ctx

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def mqtt_port(self) -> int:
        return self.running.mqtt_port

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)

    def drain(self) -> None:
        """Wait until ingest has persisted everything it received so far."""
        self.call(self.ctx.ingest.drain())


def settings_for(tmp_path, **overrides) -> ServiceSettings:
    base = dict(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        http_port=0,
        mqtt_port=0,
        mqtt_host="127.0.0.1",
        admin_token=ADMIN_TOKEN,
        presence_check_interval_s=0.5,
    )
    base.update(overrides)
    return ServiceSettings(**base)
