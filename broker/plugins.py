"""amqtt plugins: who may connect (FleetAuthPlugin) and which topics each principal may use (FleetTopicPlugin)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.mqtt.connack import BAD_USERNAME_PASSWORD, IDENTIFIER_REJECTED, NOT_AUTHORIZED
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.credentials import CredentialStore, Principal
from broker.limits import FailureLimiter, LogThrottle
from protocol.topics import service_may_access, unit_may_publish, unit_may_receive, unit_may_subscribe

log = logging.getLogger(__name__)

# Keys in amqtt's Session.attributes (namespaced, as amqtt asks of extensions).
PRINCIPAL = "fleet.principal"
REFUSAL = "fleet.connack_refusal"


def may_access(principal: Principal | None, topic: str, action: Action) -> bool:
    """The per-unit topic ACL (docs/protocol.md) for one principal and action."""
    if principal is None:
        return False
    if principal.kind == "service":
        return service_may_access(topic)
    if action == Action.PUBLISH:
        return unit_may_publish(principal.name, topic)
    if action == Action.RECEIVE:
        return unit_may_receive(principal.name, topic)
    # SUBSCRIBE takes exact own receive topics only, and the one filter of its own sessions' downlinks.
    return unit_may_subscribe(principal.name, topic)


def principal_of(session: Session | None) -> Principal | None:
    if session is None:
        return None
    value = session.attributes.get(PRINCIPAL)
    return value if isinstance(value, Principal) else None


class FleetAuthPlugin(BaseAuthPlugin):
    """Refuses anonymous clients, checks credentials against a CredentialStore, pins unit client ids."""

    @dataclass
    class Config:
        credentials: Any = None
        failures_per_minute: int = 30
        max_payload_bytes: int = 0

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        if not isinstance(self.config.credentials, CredentialStore):
            raise TypeError("FleetAuthPlugin needs a CredentialStore in its 'credentials' option")
        self._store: CredentialStore = self.config.credentials
        self._limiter = FailureLimiter(self.config.failures_per_minute)
        self._log_throttle = LogThrottle()

    async def authenticate(self, *, session: Session) -> bool:
        refusal = await self._check(session)
        if refusal is not None:
            session.attributes[REFUSAL] = refusal
            return False
        return True

    async def _check(self, session: Session) -> int | None:
        source = session.remote_address
        if session.username is None:
            log.info("refused anonymous client %r from %s", session.client_id, source)
            return NOT_AUTHORIZED
        if self._limiter.blocked(source):
            if self._log_throttle.allow(source):
                log.warning("refusing logins from %s for a while: too many failures", source)
            return BAD_USERNAME_PASSWORD
        principal = await self._store.authenticate(session.username, session.password)
        if principal is None:
            self._limiter.failed(source)
            if self._log_throttle.allow(("bad", session.username)):
                log.warning("refused %r from %s: bad or unknown credentials", session.username, source)
            return BAD_USERNAME_PASSWORD
        if principal.kind == "unit" and session.client_id != principal.name:
            log.warning(
                "refused unit %s from %s: client id %r is not its device id", principal.name, source, session.client_id
            )
            return IDENTIFIER_REJECTED
        if session.will_flag and not self._will_allowed(principal, session):
            log.warning("refused %s from %s: Will on %r not allowed", principal.name, source, session.will_topic)
            return NOT_AUTHORIZED
        session.attributes[PRINCIPAL] = principal
        return None

    def _will_allowed(self, principal: Principal, session: Session) -> bool:
        # amqtt publishes a Will without any topic check, so the Will is checked here, at CONNECT.
        topic = session.will_topic or ""
        size = len(session.will_message or b"")
        limit = self.config.max_payload_bytes
        return may_access(principal, topic, Action.PUBLISH) and not (limit and size > limit)


class FleetTopicPlugin(BaseTopicPlugin):
    """Allows exactly what `may_access` allows; always answers True or False (amqtt treats None as deny)."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if topic is None or action is None:
            return False
        return may_access(principal_of(session), topic, action)
