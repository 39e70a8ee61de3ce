"""Who may connect to a clustered broker, and which topics each client may use: the decisions behind
/api/broker-auth/..., whatever shape the broker asks in.

The topic rule is the per-unit ACL of docs/protocol.md, from protocol/topics.py (the functions the embedded amqtt
broker's plugin calls too): a unit publishes only its own uplink topics and subscribes to (and is delivered) only
its own downlink topics, exactly, no wildcards; the service account reaches everything under `fleet/`.

Unit secrets are checked by the service's Authenticator: the slow hash runs once per secret and replica, and every
check reads the stored hash again, so a unit revoked or re-keyed on any replica is refused at its next check.
Failed credentials are counted per MQTT client (its address when the broker sends one, else the username); past
the budget only an already verified secret is accepted and no slow hash runs, so a flood of guesses costs nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_service.auth.credentials import Authenticator
from fleet_service.auth.rate_limits import FailureLimiter
from fleet_service.devices.models import Device
from fleet_service.prometheus import Registry
from protocol.ids import SERVICE_USERNAME, is_device_id
from protocol.topics import service_may_access, unit_may_publish, unit_may_subscribe

__all__ = ["Access", "BrokerAuth", "Login"]

log = logging.getLogger(__name__)

DECISIONS = "fleet_broker_auth_decisions_total"


class Access(StrEnum):
    """What a client asks to do with a topic: publish to it, subscribe to a filter, or be delivered a message."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    READ = "read"


@dataclass(frozen=True)
class Login:
    """The outcome of a CONNECT check: allowed or not, and whether the client is the service account."""

    allowed: bool
    superuser: bool = False


DENIED = Login(False)


class BrokerAuth:
    def __init__(
        self,
        engine: Engine,
        auth: Authenticator,
        registry: Registry,
        service_secret: str | None,
        failures_per_client: int,
        window_s: float,
    ) -> None:
        self._engine = engine
        self._auth = auth
        self._registry = registry
        self._service_secret = service_secret.encode() if service_secret else None
        self.failures = FailureLimiter(failures_per_client, window_s)
        registry.describe(DECISIONS, "counter", "Broker auth answers over HTTP, by broker shape, check and result")

    def count(self, shape: str, check: str, allowed: bool) -> None:
        self._registry.inc(DECISIONS, shape=shape, check=check, result="allow" if allowed else "deny")

    async def login(self, username: str | None, password: str | None, client_id: str | None, peer: str | None) -> Login:
        """A CONNECT: the service account by its secret, a unit by its secret and with its own id as client id."""
        if not username or not password:
            return DENIED  # anonymous clients are refused
        if username != SERVICE_USERNAME and not is_device_id(username):
            return DENIED  # names no unit (and could not even be looked up: NUL bytes, length)
        key = f"peer {peer}" if peer else f"user {username}"
        with self.failures.attempt(key) as attempt:
            if username == SERVICE_USERNAME:
                ok = self._service_secret is not None and hmac.compare_digest(password.encode(), self._service_secret)
                result = Login(ok, superuser=ok)
            else:
                identity = await asyncio.to_thread(self._auth.device, username, password, verify=not attempt.over)
                pinned = not client_id or client_id == username  # a unit connects as itself only
                result = Login(identity is not None and pinned)
            if not result.allowed:
                wait = attempt.failed()
                if not wait:  # past the budget the log is not flooded either
                    log.warning("broker login refused for %s (client %r, from %s)", username, client_id, peer or "?")
        return result

    async def may(
        self, username: str | None, topics: list[str], access: Access, client_id: str | None = None
    ) -> list[bool]:
        """For each topic (or filter), whether this client may `access` it. A unit must still be enrolled."""
        if not username:
            return [False] * len(topics)
        if username == SERVICE_USERNAME:
            return [service_may_access(t) for t in topics]
        if not is_device_id(username) or (client_id and client_id != username):
            return [False] * len(topics)
        rule = unit_may_publish if access is Access.PUBLISH else unit_may_subscribe
        answers = [rule(username, t) for t in topics]
        if any(answers) and not await asyncio.to_thread(self._enrolled, username):
            return [False] * len(topics)  # revoked: its connection may outlive it on the broker
        return answers

    def _enrolled(self, device_id: str) -> bool:
        with Session(self._engine) as s:
            return s.exec(select(Device.id).where(Device.id == device_id)).first() is not None
