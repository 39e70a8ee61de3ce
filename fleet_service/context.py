"""Everything one running service holds, built once per app and reachable from routes via dependencies."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from fleet_service.commands import Dispatcher
from fleet_service.config import BrokerTarget, ServiceSettings
from fleet_service.events import EventBus
from fleet_service.group_config import DesiredConfigs
from fleet_service.ingest.budget import UnitBudgets
from fleet_service.ingest.embedded_link import EmbeddedLink
from fleet_service.ingest.link import MqttLink
from fleet_service.ingest.persister import Outcome
from fleet_service.ingest.pipeline import Ingest
from fleet_service.ingest.telemetry_path import ClockWindow
from fleet_service.mosquitto_admin import MosquittoFiles, MosquittoManager
from fleet_service.presence import count_online, run_presence_sweeper
from fleet_service.ratelimit import AuthLimits
from fleet_service.relay import RelayHub
from fleet_service.replica_events import EventRelay, relay_name
from fleet_service.retention import run_retention
from fleet_service.rollouts import RolloutEngine
from fleet_service.security import Authenticator
from fleet_service.telemetry import Registry, standard_registry
from fleet_service.turn import build_issuer, register_metrics
from fleet_service.websessions import SessionStore
from protocol.topics import events_filter, events_origin, service_filters

log = logging.getLogger(__name__)
BrokerLink = MqttLink | EmbeddedLink  # the same interface: run(), connected, connections, on_connect, publish()


@dataclass
class ServiceContext:
    settings: ServiceSettings
    engine: Engine
    registry: Registry
    bus: EventBus
    auth: Authenticator
    link: BrokerLink
    ingest: Ingest
    dispatcher: Dispatcher
    broker: Any = None  # the embedded broker, when running in-process
    relay: Any = None  # fleet_service.relay.RelayHub
    turn: Any = None  # turn_service.TurnIssuer, or None when TURN is not configured
    turn_off_reason: str = ""
    limits: AuthLimits | None = None  # failed-credential budgets (issue 5)
    sessions: SessionStore | None = None  # dashboard login sessions
    mosquitto: MosquittoManager | None = None  # a Mosquitto whose password/ACL files this service manages
    tasks: list[asyncio.Task] = field(default_factory=list)
    # control plane (issue 4): desired configs with group defaults, rollouts, live events across replicas
    configs: DesiredConfigs = None  # type: ignore[assignment]
    rollouts: RolloutEngine = None  # type: ignore[assignment]
    event_relay: EventRelay | None = None

    @classmethod
    def build(cls, settings: ServiceSettings, engine: Engine, broker: Any = None) -> ServiceContext:
        registry = standard_registry()
        bus = EventBus(settings.events_buffer)
        ingest = Ingest(engine, registry, bus, batch_max=settings.ingest_batch_max,
                        queue_max=settings.ingest_queue_max, queue_max_bytes=settings.ingest_queue_max_bytes,
                        budgets=UnitBudgets(settings.unit_messages_per_s, settings.unit_bytes_per_s),
                        clock=ClockWindow(int(settings.unit_clock_window_s * 1000),
                                          int(settings.unit_clock_ahead_s * 1000)))
        group = "fleet" if settings.use_shared_subscriptions else None
        # With an external broker other replicas may run: relay live events through it (embedded: one replica).
        event_relay: EventRelay | None = None  # set below, once the link it publishes through exists

        async def on_message(message) -> None:
            if event_relay is not None and events_origin(message.topic.value) is not None:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                await event_relay.handle(message.topic.value, payload)
            else:
                await ingest.handle(message)

        link: BrokerLink
        if broker is not None:  # in-process: straight from the broker's consumer hook, no MQTT connection
            link = EmbeddedLink(broker, service_filters(), ingest.accept, registry)
        else:
            client_id = f"_fleet-service-{settings.replica_id}"[:64]  # never a valid device id
            link = MqttLink(BrokerTarget(settings.broker_url), client_id, service_filters(group) + [events_filter()],
                            on_message, registry)
        dispatcher = Dispatcher(engine, link, bus)
        if broker is None:
            event_relay = EventRelay(bus, link.publish, registry, relay_name(settings.replica_id))
        registry.gauge_callback("fleet_devices_online", lambda: count_online(engine))
        registry.gauge_callback("fleet_events_published_total", lambda: bus.published)
        ingest.acks.publish = link.publish
        ctx = cls(settings, engine, registry, bus, Authenticator(engine, settings.admin_token), link, ingest,
                  dispatcher, broker)
        ingest.listeners.append(ctx._on_outcome)
        ctx.event_relay = event_relay
        ctx.configs = DesiredConfigs(engine, link, bus)
        ctx.rollouts = RolloutEngine(engine, dispatcher, bus)
        ingest.listeners.append(ctx.rollouts.on_outcome)
        link.on_connect.append(ctx._on_broker_connect)
        ctx.relay = RelayHub(link, registry)
        ingest.relay_handler = ctx.relay.up
        ctx.turn, ctx.turn_off_reason = build_issuer(settings.data_dir, embedded=broker is not None)
        if ctx.turn is not None:
            register_metrics(registry, ctx.turn)
        ctx.limits = AuthLimits(settings.auth_failures_per_user, settings.auth_failures_per_source,
                                settings.auth_window_s)
        ctx.sessions = SessionStore(engine, settings.session_idle_s, settings.session_max_age_s)
        if settings.mosquitto_managed and broker is None:
            ctx.mosquitto = MosquittoManager(MosquittoFiles.from_settings(settings, engine))
            registry.gauge_callback("fleet_mosquitto_reloads_total", lambda: ctx.mosquitto.files.reloads)
            registry.gauge_callback("fleet_mosquitto_sync_failures_total", lambda: ctx.mosquitto.files.failures)
        return ctx

    async def _on_outcome(self, outcome: Outcome) -> None:
        if outcome.type == "presence" and outcome.data.get("online"):
            # In the background: ingest must not wait for the broker's acknowledgements.
            self.dispatcher.republish_pending_soon(outcome.device_id)
            self.configs.soon(self.configs.on_birth(outcome.device_id))

    async def _on_broker_connect(self) -> None:
        """Publish what could not be published while the broker link was down."""
        try:
            await self.dispatcher.send_stale_queued(older_than_ms=0)
            await self.configs.publish_out_of_sync()
        except Exception:
            log.exception("re-publishing after a broker reconnect failed")

    async def on_credentials_changed(self, device_id: str, revoked: bool = False) -> None:
        """A unit was enrolled, re-keyed or revoked: drop cached credentials, cut a revoked unit off now."""
        self.auth.forget_device(device_id)
        if self.broker is not None:
            await self.broker.revoke(device_id) if revoked else self.broker.forget(device_id)
        if self.mosquitto is not None:
            await self.mosquitto.apply()  # rewrites the password file and reloads: the old secret stops working

    def start(self) -> None:
        s = self.settings
        self.tasks = [
            asyncio.create_task(self.link.run(), name="mqtt-link"),
            asyncio.create_task(self.ingest.run(), name="ingest"),
            asyncio.create_task(self.ingest.acks.run(), name="ingest-acks"),
            asyncio.create_task(self.ingest.run_refusals_writer(), name="ingest-refusals"),
            asyncio.create_task(self.dispatcher.run_sweeper(), name="command-sweeper"),
            asyncio.create_task(
                run_presence_sweeper(self.engine, self.bus, s.presence_timeout_s, s.presence_check_interval_s),
                name="presence-sweeper",
            ),
            asyncio.create_task(self.rollouts.run(), name="rollouts"),
            asyncio.create_task(
                run_retention(self.engine, self.registry, s.log_retention_days, s.metric_retention_days,
                              audit_days=s.audit_retention_days, log_rows_per_unit=s.log_rows_per_unit),
                name="retention",
            ),
            asyncio.create_task(self.configs.follow_devices(), name="config-follower"),
        ]
        if self.event_relay is not None:
            self.tasks.append(asyncio.create_task(self.event_relay.run(), name="event-relay"))
        if self.mosquitto is not None:
            self.tasks.append(asyncio.create_task(self.mosquitto.run(), name="mosquitto-files"))

    async def stop(self) -> None:
        await self.ingest.drain(timeout=5)
        await self.ingest.acks.drain(timeout=2)
        if isinstance(self.link, EmbeddedLink):
            self.link.close()  # units held back for ingest must not hold up the broker's shutdown
        background = [*self.tasks, *self.dispatcher.background, *self.configs.background]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.turn is not None:
            await self.turn.aclose()
        self.engine.dispose()
