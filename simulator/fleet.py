"""`fleet simulate`: N simulated units speaking the real wire protocol, for demos, dashboard tests and load.

`Simulation` holds thousands of units on one asyncio loop, each on its own MQTT connection
(see `simulator.unit`). `run_simulation` is the command: enroll the units that do not exist yet (through the
HTTP API, or directly in the database by the callable the service side hands in), run them, and take them offline
cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from protocol.heap import settle
from protocol.ids import is_device_id
from simulator.enroll import EnrollIds, EnrollmentError, SecretCache, ensure_via_api, unit_ids
from simulator.shared import BrokerAddress, Shared, SimOptions, SimStats
from simulator.unit import SimUnit

log = logging.getLogger(__name__)

__all__ = ["Simulation", "SimOptions", "SimStats", "SimulatorSettings", "run_simulation"]


class Simulation:
    """N simulated units on one event loop. `start()` launches them (connects paced), `stop()` takes them offline."""

    def __init__(self, broker_url: str, units: Mapping[str, str], options: SimOptions | None = None) -> None:
        self.shared = Shared(BrokerAddress.parse(broker_url), options or SimOptions())
        self.units = {
            device_id: SimUnit(device_id, secret, self.shared, i)
            for i, (device_id, secret) in enumerate(sorted(units.items()))
        }

    @property
    def stats(self) -> SimStats:
        return self.shared.stats

    @property
    def options(self) -> SimOptions:
        return self.shared.options

    async def __aenter__(self) -> Simulation:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Launch every unit; returns at once (`wait_online` waits for the connections)."""
        for unit in self.units.values():
            unit.start()

    @property
    def online(self) -> int:
        """Units whose birth the broker has acknowledged on their current connection."""
        return sum(1 for u in self.units.values() if u.connected.is_set())

    async def wait_online(self, timeout: float, count: int | None = None) -> int:
        """Wait until `count` (default: all) units are online; return how many are."""
        target = len(self.units) if count is None else count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.online < target and loop.time() < deadline:
            await asyncio.sleep(0.1)
        return self.online

    async def stop(self, timeout: float = 10.0) -> None:
        """Take every unit offline cleanly (offline on the state topic, then DISCONNECT), many at a time."""
        gate = asyncio.Semaphore(500)

        async def one(unit: SimUnit) -> None:
            async with gate:
                await unit.stop(timeout)

        await asyncio.gather(*(one(u) for u in self.units.values()), return_exceptions=True)

    async def kill(self, device_id: str) -> None:
        """Drop a unit's TCP connection without DISCONNECT: the broker publishes its Will."""
        await self.units[device_id].kill()

    async def stop_unit(self, device_id: str) -> None:
        """Stop one unit cleanly: it publishes offline itself."""
        await self.units[device_id].stop()

    def start_unit(self, device_id: str) -> None:
        """Bring a stopped or killed unit back on a new connection and session."""
        self.units[device_id].start()


StrList = Annotated[list[str], NoDecode]


class SimulatorSettings(BaseSettings):
    """Options of `fleet simulate`; each also reads `FLEET_<OPTION>`."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    devices: int = Field(default=10, ge=1, le=100_000)
    prefix: str = "sim"
    broker_url: str = "mqtt://127.0.0.1:1883"
    api_url: str = ""
    admin_token: str | None = None
    secrets_file: Path | None = None
    heartbeat_interval: float = Field(default=30.0, gt=0)
    metrics_interval: float = Field(default=10.0, gt=0)
    log_interval: float = Field(default=60.0, ge=0)
    keepalive: int = Field(default=60, ge=2, le=3600)
    connect_rate: float = Field(default=100.0, ge=0)
    command_seconds: float = Field(default=1.0, ge=0)
    fail_update: StrList = Field(default_factory=list)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    duration: float = Field(default=0.0, ge=0)

    @field_validator("fail_update", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not is_device_id(f"{v}-00001"):
            raise ValueError(f"prefix {v!r} does not make valid device ids (lowercase letters, digits, '-', '_')")
        return v

    def options(self) -> SimOptions:
        return SimOptions(
            heartbeat_interval=self.heartbeat_interval,
            metrics_interval=self.metrics_interval,
            log_interval=self.log_interval,
            keepalive=self.keepalive,
            connect_rate=self.connect_rate,
            command_seconds=self.command_seconds,
            fail_update=frozenset(self.fail_update),
            fail_rate=self.fail_rate,
        )


SETTING_NAMES = [
    "devices",
    "prefix",
    "broker_url",
    "api_url",
    "admin_token",
    "secrets_file",
    "heartbeat_interval",
    "metrics_interval",
    "log_interval",
    "keepalive",
    "connect_rate",
    "command_seconds",
    "fail_update",
    "fail_rate",
    "duration",
]


def run_simulation(args: argparse.Namespace, enroll_in_database: EnrollIds, data_dir: Path = Path("fleet-data")) -> int:
    """The `fleet simulate` command: enroll what is missing, run until SIGINT/SIGTERM (or --duration).
    Without --api-url, `enroll_in_database` enrolls the units (the simulator does not know the database)."""
    from fleet_cli.options import overrides

    try:
        settings = SimulatorSettings(**overrides(args, SETTING_NAMES))
        BrokerAddress.parse(settings.broker_url)
    except (ValidationError, ValueError) as exc:
        print(f"fleet simulate: {exc}", file=sys.stderr)
        return 2
    ids = unit_ids(settings.prefix, settings.devices)
    cache_path = settings.secrets_file or data_dir / "simulated-units.json"
    started = time.monotonic()

    def progress(n: int) -> None:
        print(f"fleet simulate: enrolled {n} units...", flush=True)

    try:
        if settings.api_url:
            if not settings.admin_token:
                print("fleet simulate: --api-url needs --token (or FLEET_ADMIN_TOKEN)", file=sys.stderr)
                return 2
            cache = SecretCache(cache_path, settings.api_url.rstrip("/"))
            secrets = ensure_via_api(settings.api_url, settings.admin_token, settings.prefix, ids, cache, progress)
        else:
            secrets = enroll_in_database(ids, cache_path, progress)
    except EnrollmentError as exc:
        print(f"fleet simulate: {exc}", file=sys.stderr)
        return 1
    print(
        f"fleet simulate: {len(secrets)} units ready in {time.monotonic() - started:.1f}s "
        f"(secrets cached in {cache_path}); connecting to {settings.broker_url.split('@')[-1]}",
        flush=True,
    )
    return asyncio.run(_simulate(settings, secrets))


async def _simulate(settings: SimulatorSettings, secrets: dict[str, str]) -> int:
    sim = Simulation(settings.broker_url, secrets, settings.options())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Not loop.add_signal_handler: with thousands of busy connections asyncio's self-pipe can be full when the
    # signal comes, and then the signal is lost. A plain handler runs in this thread whatever the pipe holds.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await sim.start()
    began = loop.time()
    last = -1
    settled = False
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 5.0)
        except TimeoutError:
            pass
        online = sim.online
        if online == len(sim.units) and not settled:
            settle()  # the units' connections and state live as long as the run (protocol/heap.py)
            settled = True
        if online != last:
            s = sim.stats
            print(
                f"fleet simulate: {online}/{len(sim.units)} online, {s.published} messages sent, "
                f"{sum(s.results.values())} commands finished, {s.refused} refused",
                flush=True,
            )
            last = online
        if settings.duration and loop.time() - began >= settings.duration:
            break
    print("fleet simulate: taking the units offline...", flush=True)
    await sim.stop()
    print("fleet simulate: stopped", flush=True)
    return 0
