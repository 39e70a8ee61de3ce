"""What the rest of the service needs of its broker link, whichever link it has (MQTT or the embedded broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from fleet_service.errors import Unavailable

ConnectHook = Callable[[], Coroutine[Any, Any, None]]  # an async function: each run is a task of its own


class BrokerUnavailable(Unavailable):
    """The service is not connected to the broker right now."""


class Publish(Protocol):
    """A link's publish(), for what only publishes (acks, live events for the other replicas)."""

    def __call__(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> Awaitable[None]: ...


class BrokerLink(Protocol):
    """Messages from units come in through the handler the link was built with; this is the rest."""

    connected: asyncio.Event  # set while messages flow and publish() can succeed
    connections: int  # times the link came up
    on_connect: list[ConnectHook]  # run (in the background) each time the link comes up

    async def run(self) -> None:
        """Keep the link up until cancelled."""
        ...

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        """Return once the broker took the message; BrokerUnavailable when it cannot."""
        ...

    def backlog(self) -> int:
        """Messages received, not yet handed to ingest."""
        ...

    async def subscribe(self, topic: str) -> None:
        """Also receive `topic` (an exact topic name, unshared), now and after every reconnect, until unsubscribe();
        BrokerUnavailable when the broker cannot be told now."""
        ...

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving a topic given to subscribe(); never fails (a link that is down forgets it too)."""
        ...

    def stopping(self) -> None:
        """Shutdown is about to stop the broker."""
        ...

    def close(self) -> None:
        """Stop consuming for good (shutdown)."""
        ...
