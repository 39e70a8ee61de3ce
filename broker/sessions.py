"""Connection lifecycle on top of RoutingBroker: authenticate first, take over, drain, keepalive watchdog.

Fixes of amqtt 0.12.1 (see shared/notes/brokers.md) that live here:
- CONNECT is authenticated before any existing session is touched (a wrong password with a victim's
  client id cannot cut the victim off); then the old connection is closed and fully torn down
  before the new one adopts or replaces the session;
- on disconnect, every message already acknowledged to the publisher is routed before the
  session is dropped (amqtt discarded the backlog), then the Will is published;
- a session silent for more than keepalive_factor x its keepalive is closed like a TCP drop;
- a client that sends no CONNECT within connect_timeout_s is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.contexts import BrokerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.errors import BrokerError as AmqttBrokerError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from broker.connection import Connection, KeyedLock, watch_keepalive
from broker.outbox import Outbox, Outgoing
from broker.plugins import REFUSAL, principal_of
from broker.routing import Consumer, RoutingBroker
from broker.wire import ActivityReader, PacketTooLargeError, abort

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048

_CONNECT_ERRORS = (TimeoutError, AMQTTError, MQTTError, NoDataError, OSError, UnicodeDecodeError)
_RESUMED_FIELDS = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "will_retain",
    "keep_alive",
    "username",
    "clean_session",
    "remote_address",
    "remote_port",
    "ssl_object",
)


class FleetBroker(RoutingBroker):
    """amqtt Broker with a sound connection lifecycle; see the module docstring."""

    def __init__(
        self,
        config: BrokerConfig | dict[str, Any],
        *,
        max_payload_bytes: int,
        max_packet_bytes: int,
        max_queued_messages: int,
        max_inflight_messages: int = 100,
        keepalive_factor: float = 1.5,
        connect_timeout_s: float = 10.0,
        watchdog_interval_s: float = 0.5,
        consumers: list[Consumer] | None = None,
    ) -> None:
        super().__init__(
            config, max_payload_bytes=max_payload_bytes, max_queued_messages=max_queued_messages, consumers=consumers
        )
        self._max_packet = max_packet_bytes
        self._max_inflight = max_inflight_messages
        self._keepalive_factor = keepalive_factor
        self._connect_timeout = connect_timeout_s
        self._watchdog_interval = watchdog_interval_s
        self._connections: dict[str, Connection] = {}
        self._client_locks = KeyedLock()
        self._watchdog_task: asyncio.Task[None] | None = None
        self._serving: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await super().start()
        self._watchdog_task = asyncio.create_task(
            watch_keepalive(self._connections, self._keepalive_factor, self._watchdog_interval)
        )

    async def shutdown(self) -> None:
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            await asyncio.gather(self._watchdog_task, return_exceptions=True)
        live = list(self._connections.values())
        for conn in live:
            conn.close(will=False)
        if live:
            await asyncio.wait([asyncio.ensure_future(c.done.wait()) for c in live], timeout=5)
        await super().shutdown()
        if self._serving:
            _, pending = await asyncio.wait(self._serving, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        if listener_type != ListenerType.TCP:
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        # amqtt keeps asyncio's backlog of 100: a fleet reconnecting after a restart overflows it.
        return await asyncio.start_server(
            functools.partial(self.stream_connected, listener_name=listener_name),
            address,
            port,
            reuse_address=True,
            ssl=ssl_context,
            backlog=LISTEN_BACKLOG,
        )

    @property
    def connections(self) -> dict[str, Connection]:
        return self._connections

    def inbound_backlog(self) -> int:
        """Messages acknowledged to their publishers and not yet routed (each connection routes in order)."""
        return sum(conn.session.delivered_message_queue.qsize() for conn in list(self._connections.values()))

    async def disconnect(self, client_id: str, timeout: float = 10.0) -> bool:
        """Close a live connection as a TCP drop would (its Will fires); False when there is none."""
        conn = self._connections.get(client_id)
        if conn is None:
            return False
        conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.done.wait(), timeout)
        return True

    # ---- connect --------------------------------------------------------------------------------

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        server = self._servers.get(listener_name)
        if server is None:
            raise AmqttBrokerError(f"Invalid listener name '{listener_name}'")
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        await server.acquire_connection()
        try:
            await self._serve(listener_name, ActivityReader(reader, self._max_packet), writer)
        except _CONNECT_ERRORS as exc:
            log.info("connection ended with %s: %s", type(exc).__name__, exc)
        finally:
            server.release_connection()
            if task is not None:
                self._serving.discard(task)

    async def _serve(self, listener_name: str, reader: ActivityReader, writer: WriterAdapter) -> None:
        peer = writer.get_peer_info()
        if peer is None:
            await writer.close()
            return
        try:
            handler, session = await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager), self._connect_timeout
            )
        except (*_CONNECT_ERRORS, PacketTooLargeError) as exc:
            log.info("no valid CONNECT from %s:%s (%s)", peer[0], peer[1], type(exc).__name__)
            abort(writer)
            return
        if not session.client_id:
            session.client_id = gen_client_id()
        if not await self._authenticate(session, self.listeners_config[listener_name]):
            await self._refuse(writer, session.attributes.get(REFUSAL, NOT_AUTHORIZED))
            return
        session.password = None  # checked; do not keep it around in memory
        conn = await self._open(session, handler, reader, writer)
        if conn is None:
            return
        try:
            await self._pump(conn)
        finally:
            await self._end(conn)

    async def _refuse(self, writer: WriterAdapter, code: int) -> None:
        with contextlib.suppress(OSError):
            await ConnackPacket.build(0, code).to_stream(writer)
            await writer.drain()
        with contextlib.suppress(OSError):
            await writer.close()

    async def _open(
        self, session: Session, handler: BrokerProtocolHandler, reader: ActivityReader, writer: WriterAdapter
    ) -> Connection | None:
        """Take over any live connection of this client id, adopt its session, CONNACK and start the handler."""
        cid = session.client_id or ""
        async with self._client_locks.hold(cid):
            existing = self._sessions.get(cid, (None, None))[0]
            owner = principal_of(existing)
            if owner is not None and owner != principal_of(session):
                log.warning("refused %s: client id %r belongs to another account", session.username, cid)
                await self._refuse(writer, IDENTIFIER_REJECTED)
                return None
            old = self._connections.get(cid)
            if old is not None:
                log.info("client %s connected again; closing its previous connection", cid)
                old.close(will=bool(session.clean_session))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(old.done.wait(), 15)
            session = await self._adopt(session)
            handler.attach(session, reader, writer)
            outbox = Outbox(handler, cid, window=self._max_inflight, limit=self._max_queued)
            conn = Connection(cid, session, handler, reader, writer, outbox)
            # Our own disconnect future: amqtt's handler resets its waiter, losing a DISCONNECT that
            # arrives while start() is still running.
            handler._disconnect_waiter = conn.disconnected
            self._connections[cid] = conn  # closable (disconnect, watchdog) from the CONNACK on
            try:
                await handler.mqtt_connack_authorize(True)
                await handler.start()
            except BaseException:
                del self._connections[cid]
                abort(writer)
                await self._stop_handler(handler)
                raise
            outbox.start()
            session.transitions.connect()
            self._sessions[cid] = (session, handler)
            # No await since registering: queued messages go out before anything routed from now on.
            await self._publish_session_retained_messages(session)
        await self.plugins_manager.fire_event(BrokerEvents.CLIENT_CONNECTED, client_id=cid, client_session=session)
        if session.parent:  # a resumed session: retained messages for its existing subscriptions
            for subscription in self.own_filters(session):
                await self._publish_retained_messages_for_subscription(subscription, session)
        return conn

    async def _adopt(self, incoming: Session) -> Session:
        cid = incoming.client_id or ""
        existing = self._sessions.get(cid, (None, None))[0]
        if incoming.clean_session or existing is None:
            if existing is not None:
                await self._delete_session(cid)
            incoming.parent = 0
            return incoming
        for name in _RESUMED_FIELDS:
            setattr(existing, name, getattr(incoming, name))
        existing.password = None
        existing.attributes.update(incoming.attributes)
        existing.parent = 1
        return existing

    def _send(self, session: Session, message: Outgoing) -> bool:
        conn = self._connections.get(session.client_id or "")
        if conn is None or conn.session is not session:
            return False
        return conn.outbox.put(message)

    # ---- connected ------------------------------------------------------------------------------

    async def _pump(self, conn: Connection) -> None:
        """Serve SUBSCRIBE, UNSUBSCRIBE and PUBLISH of one connection until it ends."""
        handler, session = conn.handler, conn.session
        disconnect = conn.disconnected
        subscribe = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
        try:
            while True:
                done, _ = await asyncio.wait(
                    (disconnect, subscribe, unsubscribe, deliver), return_when=asyncio.FIRST_COMPLETED
                )
                if subscribe in done:
                    await self._handle_subscription(session, handler, subscribe)
                    subscribe = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe in done:
                    await self._handle_unsubscription(session, handler, unsubscribe)
                    unsubscribe = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if deliver in done:
                    message = deliver.result()
                    if message is not None and not await self._deliver(session, message):
                        conn.close()
                    deliver = asyncio.ensure_future(handler.mqtt_deliver_next_message())
                if disconnect in done:
                    conn.graceful = isinstance(disconnect.result(), DisconnectPacket)
                    return
        finally:
            for waiter in (disconnect, subscribe, unsubscribe, deliver):
                waiter.cancel()
            results = await asyncio.gather(disconnect, subscribe, unsubscribe, deliver, return_exceptions=True)
            if isinstance(results[-1], ApplicationMessage):
                conn.leftover = results[-1]  # dequeued just before the disconnect; still to be routed

    async def _end(self, conn: Connection) -> None:
        """Stop input, route what was acknowledged, publish the Will, then forget the connection."""
        session, cid = conn.session, conn.client_id
        try:
            if conn.closing:
                abort(conn.writer)
            try:
                await asyncio.wait_for(self._stop_handler(conn.handler), 5)
            except TimeoutError:
                abort(conn.writer)
            unacknowledged = await conn.outbox.close()
            if not session.clean_session:  # kept, in order, for the session's next connection
                for outgoing in unacknowledged:
                    if outgoing.qos > 0:
                        self._queue_offline(session, outgoing)
            backlog = [conn.leftover] if conn.leftover is not None else []
            while not session.delivered_message_queue.empty():
                backlog.append(session.delivered_message_queue.get_nowait())
            for message in backlog:
                await self._deliver(session, message)
            if conn.publish_will and not conn.graceful and session.will_flag:
                await self._publish_will(session)
        finally:
            session.transitions.disconnect()
            if self._connections.get(cid) is conn:
                del self._connections[cid]
            if session.clean_session and self._sessions.get(cid, (None, None))[0] is session:
                del self._sessions[cid]
                await self._del_all_subscriptions(session)
                session.clear_queues()
            conn.done.set()
        await self.plugins_manager.fire_event(BrokerEvents.CLIENT_DISCONNECTED, client_id=cid, client_session=session)

    async def _publish_will(self, session: Session) -> None:
        log.debug("publishing the Will of %s", session.client_id)
        if session.will_topic:
            await self._route(session, session.will_topic, session.will_message or b"", session.will_qos)
        if session.will_retain:
            await self.retain_message(session, session.will_topic, session.will_message, session.will_qos)
        if self._consumers and session.will_topic and session.will_message is not None:
            await self._consume(
                session.will_topic, session.will_message, session.will_qos or 0, bool(session.will_retain)
            )

    # ---- housekeeping ---------------------------------------------------------------------------

    async def _session_monitor(self) -> None:
        """Expire disconnected persistent sessions (clean ones are dropped at disconnect)."""
        while True:
            await asyncio.sleep(1)
            expiry = self.config.session_expiry_interval
            cutoff = time.time() - expiry if expiry is not None else None
            for cid, (session, _) in list(self._sessions.items()):
                if session.transitions.state != "disconnected" or self._sessions.get(cid, (None,))[0] is not session:
                    continue
                stale = cutoff is not None and (session.last_disconnect_time or 0) < cutoff
                if stale or session.clean_session or session.is_anonymous:
                    del self._sessions[cid]
                    await self._del_all_subscriptions(session)
                    session.clear_queues()
