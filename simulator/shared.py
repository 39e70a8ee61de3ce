"""What all units of one simulation share: how they behave (`SimOptions`), the broker they connect to, the counters
of the whole simulation and the pacing of their connection attempts."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class SimOptions:
    """How the simulated units behave; intervals in seconds."""

    heartbeat_interval: float = 30.0
    metrics_interval: float = 10.0
    log_interval: float = 60.0  # mean time between log batches of one unit; 0 turns logs off
    keepalive: int = 60
    connect_rate: float = 100.0  # connection attempts per second across the whole simulation; 0 = no limit
    command_seconds: float = 1.0  # how long a command "runs"
    reboot_seconds: float = 3.0
    fail_update: frozenset[str] = frozenset()  # units whose `update` fails
    fail_rate: float = 0.0  # fraction of `update` commands that fail on any unit
    software_version: str = "1.0.0"
    seed: int | None = None


@dataclass
class SimStats:
    """Counters of the whole simulation."""

    connects: int = 0
    refused: int = 0
    connection_errors: int = 0
    published: int = 0
    duplicates: int = 0
    outbox_dropped: int = 0
    results: Counter = field(default_factory=Counter)  # final command statuses reported


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """mqtt[s]://host:port; any user:password in the URL is ignored (each unit uses its own)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls)


class Pacer:
    """Spaces connection attempts so thousands of units (or a reconnect wave) do not hit the broker at once."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Shared:
    """What all units of one simulation share."""

    address: BrokerAddress
    options: SimOptions
    stats: SimStats = field(default_factory=SimStats)
    pacer: Pacer = field(init=False)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.options.connect_rate)
