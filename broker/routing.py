"""Message routing on top of amqtt's Broker: QoS, shared subscriptions, retained messages, offline queues.

Fixes of amqtt 0.12.1 (see shared/notes/brokers.md) that live here:
- delivery at min(publish QoS, subscription QoS), never upgraded;
- `$share/{group}/{filter}` delivers each message to one connected member of the group;
- retained messages go only to the subscribing session's own filters and pass the read ACL;
- messages queued for an offline persistent session are bounded and replayed without the retain flag;
- ACL checks call the topic plugins directly instead of spawning a task per plugin per message.

In-process consumers (the embedded service's ingest) see every message the broker routes, awaited in the
publisher's own order, so a slow consumer holds that publisher back instead of losing anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action, BrokerConfig
from amqtt.events import BrokerEvents
from amqtt.mqtt.constants import QOS_0
from amqtt.plugins.base import BaseTopicPlugin
from amqtt.session import ApplicationMessage, OutgoingApplicationMessage, Session

from broker.limits import LogThrottle
from broker.outbox import Outgoing

log = logging.getLogger(__name__)

SHARE_PREFIX = "$share/"
SUBSCRIBE_FAILED = 0x80

# (topic, payload, publish QoS, publish retain flag); awaited for every routed message.
Consumer = Callable[[str, bytes | bytearray, int, bool], Awaitable[None]]


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """(group, filter) of a `$share/group/filter` subscription, else None."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


class RoutingBroker(Broker):
    """amqtt Broker whose broadcast, retained and offline-queue paths follow MQTT and our ACL."""

    def __init__(
        self,
        config: BrokerConfig | dict[str, Any],
        *,
        max_payload_bytes: int,
        max_queued_messages: int,
        consumers: list[Consumer] | None = None,
    ):
        super().__init__(config)
        self._consumers: list[Consumer] = consumers if consumers is not None else []
        self._max_payload = max_payload_bytes
        self._max_queued = max_queued_messages
        self._topic_plugins: list[BaseTopicPlugin] | None = None
        self._filters_changed = True
        self._pattern_filters: list[tuple[str, str, bool]] = []  # (subscription key, filter to match, shared)
        self._client_filters: dict[str, set[str]] = {}  # client id -> its filters, so nothing scans them all
        self._share_turn: dict[str, int] = {}
        self._log_throttle = LogThrottle()

    # ---- ACL ------------------------------------------------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        if self._topic_plugins is None:
            self._topic_plugins = [p for p in self.plugins_manager.plugins if isinstance(p, BaseTopicPlugin)]
        for plugin in self._topic_plugins:
            if not await plugin.topic_filtering(session=session, topic=topic, action=action):
                return False
        return True

    # ---- inbound messages -----------------------------------------------------------------------

    async def _deliver(self, session: Session, message: ApplicationMessage) -> bool:
        """Route one message a client published; False means a protocol violation (close the connection)."""
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_RECEIVED, client_id=session.client_id, message=message
        )
        topic = message.topic
        if not topic or has_wildcard(topic) or topic.startswith("$"):
            log.warning("client %s published to invalid topic %r; closing its connection", session.client_id, topic)
            return False
        data = message.data or b""
        if len(data) > self._max_payload:
            if self._log_throttle.allow((session.client_id, "size")):
                log.warning(
                    "dropped %d-byte message from %s on %s: over the %d-byte limit",
                    len(data),
                    session.client_id,
                    topic,
                    self._max_payload,
                )
            return True
        if not await self._topic_filtering(session, topic, Action.PUBLISH):
            if self._log_throttle.allow((session.client_id, "acl")):
                log.warning("dropped message from %s on %s: not allowed to publish there", session.client_id, topic)
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=session.client_id, message=message
        )
        await self._route(session, topic, data, message.qos)
        if message.retain:
            await self.retain_message(session, topic, data, message.qos)
        if self._consumers:
            await self._consume(topic, data, message.qos or QOS_0, bool(message.retain))
        return True

    async def publish_internal(self, topic: str, data: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish from inside the process with the service account's rights: routed to subscribers (their read
        ACL applies), stored when `retain`, and handed to the in-process consumers, as a client's publish is."""
        if not topic or has_wildcard(topic) or topic.startswith("$"):
            raise ValueError(f"cannot publish to {topic!r}: not a topic name")
        await self._route(None, topic, data, qos)
        if retain:
            await self.retain_message(None, topic, data, qos)
        if self._consumers:
            await self._consume(topic, data, qos, retain)

    async def _consume(self, topic: str, data: bytes | bytearray, qos: int, retain: bool) -> None:
        for consumer in self._consumers:
            try:
                await consumer(topic, data, qos, retain)
            except Exception:  # one consumer's bug must not cut the publisher off
                if self._log_throttle.allow(("consumer", topic)):
                    log.exception("in-process consumer failed on a message on %s", topic)

    # ---- broadcast ------------------------------------------------------------------------------

    async def _route(self, session: Session | None, topic: str, data: bytes | bytearray, qos: int | None) -> None:
        """Queue a message for its subscribers; one nobody subscribes to is not queued at all (in embedded mode
        units' telemetry has no subscriber but the in-process consumer, and the queue costs a task per message)."""
        if self._matching_subscriptions(topic):
            await self._broadcast_message(session, topic, data, qos)

    async def _run_broadcast(self, _running_tasks: deque[asyncio.Task[OutgoingApplicationMessage]]) -> None:
        broadcast = await self._broadcast_queue.get()
        topic: str | None = broadcast["topic"]
        data = broadcast["data"]
        if not topic or data is None:
            return
        publish_qos: int | None = broadcast.get("qos")
        targets: dict[str, tuple[Session, int]] = {}
        for key, subscribers, shared in self._matching_subscriptions(topic):
            chosen = [self._pick_member(key, subscribers)] if shared else subscribers
            for session, sub_qos in chosen:
                if session is None or session.client_id is None:
                    continue
                best = targets.get(session.client_id)
                if best is None or sub_qos > best[1]:
                    targets[session.client_id] = (session, sub_qos)
        for session, sub_qos in targets.values():
            qos = sub_qos if publish_qos is None else min(publish_qos, sub_qos)
            if not await self._topic_filtering(session, topic, Action.RECEIVE):
                continue
            if session.transitions.state == "connected" and self._send(session, Outgoing(topic, data, qos)):
                continue
            if not session.clean_session and qos > QOS_0 and not session.is_anonymous:
                self._queue_offline(session, Outgoing(topic, data, qos))

    def _send(self, session: Session, message: Outgoing) -> bool:
        """Hand a message to a connected session; False when it cannot take it now."""
        handler = self._get_handler(session)
        if handler is None:
            return False
        self._tasks_queue.append(
            asyncio.ensure_future(handler.mqtt_publish(message.topic, message.data, message.qos, message.retain))
        )
        return True

    def _matching_subscriptions(self, topic: str) -> list[tuple[str, list[tuple[Session, int]], bool]]:
        found = []
        exact = None if topic.startswith(SHARE_PREFIX) else self._subscriptions.get(topic)
        if exact:
            found.append((topic, exact, False))
        for key, pattern, shared in self._patterns():
            subscribers = self._subscriptions.get(key)
            if subscribers and self._matches(topic, pattern):
                found.append((key, subscribers, shared))
        return found

    def _patterns(self) -> list[tuple[str, str, bool]]:
        """Wildcard and shared filters; exact filters are found by dict lookup instead of a scan."""
        if self._filters_changed:
            patterns = []
            for key in self._subscriptions:
                shared = split_shared(key)
                if shared is not None:
                    patterns.append((key, shared[1], True))
                elif has_wildcard(key):
                    patterns.append((key, key, False))
            self._pattern_filters = patterns
            self._filters_changed = False
        return self._pattern_filters

    def _pick_member(self, key: str, members: list[tuple[Session, int]]) -> tuple[Session | None, int]:
        pool = [m for m in members if m[0].transitions.state == "connected"]
        pool = pool or [m for m in members if not m[0].clean_session]
        if not pool:
            return None, QOS_0
        turn = self._share_turn.get(key, 0)
        self._share_turn[key] = turn + 1
        return pool[turn % len(pool)]

    # ---- subscriptions --------------------------------------------------------------------------

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter = subscription[0]
        if topic_filter.startswith(SHARE_PREFIX) and split_shared(topic_filter) is None:
            return SUBSCRIBE_FAILED
        is_new = topic_filter not in self._subscriptions
        code = await super().add_subscription(subscription, session)
        if code == SUBSCRIBE_FAILED:
            return code
        # amqtt keeps the first QoS on a repeated SUBSCRIBE; MQTT says the new one replaces it.
        subscribers = self._subscriptions.get(topic_filter, [])
        for i, (existing, _) in enumerate(subscribers):
            if existing.client_id == session.client_id:
                subscribers[i] = (session, code)
        self._client_filters.setdefault(session.client_id or "", set()).add(topic_filter)
        if is_new and self._is_pattern(topic_filter):
            self._filters_changed = True
        return code

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted = super()._del_subscription(a_filter, session)
        if a_filter in self._subscriptions and not self._subscriptions[a_filter]:
            del self._subscriptions[a_filter]
            self._filters_changed = self._filters_changed or self._is_pattern(a_filter)
        filters = self._client_filters.get(session.client_id or "")
        if deleted and filters is not None:
            filters.discard(a_filter)
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        # amqtt scans every filter of every client here, on each disconnect; use the per-client index.
        for topic_filter in self._client_filters.pop(session.client_id or "", set()):
            self._del_subscription(topic_filter, session)

    def own_filters(self, session: Session) -> list[tuple[str, int]]:
        own = []
        for topic_filter in self._client_filters.get(session.client_id or "", ()):
            own += [
                (topic_filter, q)
                for s, q in self._subscriptions.get(topic_filter, [])
                if s.client_id == session.client_id
            ]
        return own

    @staticmethod
    def _is_pattern(topic_filter: str) -> bool:
        return topic_filter.startswith(SHARE_PREFIX) or has_wildcard(topic_filter)

    # ---- retained messages and offline queues ---------------------------------------------------

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, sub_qos = subscription
        if topic_filter.startswith(SHARE_PREFIX):
            return  # shared subscriptions get no retained messages (as in MQTT 5)
        if has_wildcard(topic_filter):
            candidates = [m for t, m in self._retained_messages.items() if self._matches(t, topic_filter)]
        else:
            candidates = [m for m in (self._retained_messages.get(topic_filter),) if m is not None]
        for message in candidates:
            if not await self._topic_filtering(session, message.topic, Action.RECEIVE):
                continue
            qos = sub_qos if message.qos is None else min(sub_qos, message.qos)
            self._send(session, Outgoing(message.topic, message.data, qos, retain=True))

    def _queue_offline(self, session: Session, message: Outgoing) -> None:
        """Keep a QoS>0 message for a disconnected persistent session, dropping the oldest beyond the limit."""
        queue = session.retained_messages
        if queue.qsize() >= self._max_queued:
            queue.get_nowait()
            if self._log_throttle.allow((session.client_id, "queue")):
                log.warning(
                    "offline queue of %s is full (%d); dropping its oldest messages",
                    session.client_id,
                    self._max_queued,
                )
        queue.put_nowait(RetainedApplicationMessage(None, message.topic, message.data, message.qos))

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int, target_session: Session) -> None:
        self._queue_offline(target_session, Outgoing(broadcast["topic"], broadcast["data"], qos))

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """Send what was queued while the session was offline, in order, as ordinary (not retained) messages."""
        queue = session.retained_messages
        while not queue.empty():
            message = queue.get_nowait()
            if not self._send(session, Outgoing(message.topic, message.data, message.qos or QOS_0)):
                log.warning("could not hand queued messages to %s", session.client_id)
                return
