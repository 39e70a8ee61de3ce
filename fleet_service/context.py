"""Everything one running service holds, built once per app and reachable from routes via dependencies."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from fleet_service.alerts.evaluator import AlertEvaluator
from fleet_service.auth.credentials import Authenticator
from fleet_service.auth.rate_limits import AuthLimits
from fleet_service.auth.web_sessions import SessionStore
from fleet_service.broker_auth.checks import BrokerAuth
from fleet_service.broker_link.base import BrokerLink
from fleet_service.broker_link.embedded import EmbeddedLink
from fleet_service.broker_link.mqtt import MqttLink
from fleet_service.commands.dispatch import Dispatcher
from fleet_service.db.on_loop import LoopDatabase
from fleet_service.devices.presence import count_online, run_presence_sweeper
from fleet_service.devices.retention import Keep, run_retention
from fleet_service.ingest.budget import UnitBudgets
from fleet_service.ingest.persister import Outcome
from fleet_service.ingest.pipeline import Ingest
from fleet_service.ingest.processes import ProcessPersisters
from fleet_service.ingest.telemetry_path import ClockWindow
from fleet_service.live.bus import EventBus
from fleet_service.live.replicas import EventRelay, relay_name
from fleet_service.mosquitto.admin import MosquittoFiles, MosquittoManager
from fleet_service.mosquitto.plugin_auth import PluginAuthManager, PluginCredentials
from fleet_service.notify.delivery import Retry
from fleet_service.notify.notifier import Notifier
from fleet_service.prometheus import Registry, standard_registry
from fleet_service.rollouts.runner import RolloutEngine
from fleet_service.settings import BrokerTarget, ServiceSettings
from fleet_service.signalling.relay import RelayHub
from fleet_service.signalling.turn import build_issuer, register_metrics
from fleet_service.terminal.audit import run_retention as run_terminal_retention
from fleet_service.terminal.hub import TerminalHub
from fleet_service.unit_config.desired import DesiredConfigs
from protocol.topics import events_filter, events_origin, service_filters

if TYPE_CHECKING:
    from broker.server import EmbeddedBroker
    from turn_service import TurnIssuer

log = logging.getLogger(__name__)


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
    configs: DesiredConfigs  # desired configs with group defaults
    rollouts: RolloutEngine
    relay: RelayHub  # signalling between controllers and units
    terminals: TerminalHub  # remote terminal sessions held on this replica
    limits: AuthLimits  # failed-credential budgets
    sessions: SessionStore  # dashboard login sessions
    turn: TurnIssuer | None  # None when TURN is not configured ...
    turn_off_reason: str  # ... and this says why
    alerts: AlertEvaluator  # rules over the units' latest state, one replica at a time
    notifier: Notifier  # alert events -> the outbox (one replica at a time) -> channels (every replica delivers)
    broker: EmbeddedBroker | None = None  # the embedded broker, when running in-process
    event_relay: EventRelay | None = None  # live events across replicas (external broker only)
    mosquitto: MosquittoManager | None = None  # a Mosquitto whose password/ACL files this service manages
    plugin_auth: PluginCredentials | None = None  # ... or whose dynamic security plugin holds the units' passwords
    broker_auth: BrokerAuth | None = None  # answers clustered brokers' auth calls (FLEET_BROKER_AUTH_TOKEN set)
    loop_db: LoopDatabase | None = None  # PostgreSQL: statements the event loop awaits itself (db/on_loop.py)
    tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    def build(cls, settings: ServiceSettings, engine: Engine, broker: EmbeddedBroker | None = None) -> ServiceContext:
        """The one place the service's parts are made and wired to each other: no part registers itself."""
        registry = standard_registry()
        bus = EventBus(settings.events_buffer)
        clock = ClockWindow(int(settings.unit_clock_window_s * 1000), int(settings.unit_clock_ahead_s * 1000))
        ingest = Ingest(
            engine,
            registry,
            bus,
            batch_max=settings.ingest_batch_max,
            queue_max=settings.ingest_queue_max,
            queue_max_bytes=settings.ingest_queue_max_bytes,
            budgets=UnitBudgets(settings.unit_messages_per_s, settings.unit_bytes_per_s),
            clock=clock,
            processes=(
                ProcessPersisters(settings.ingest_processes, settings.database_url, clock, registry)
                if settings.ingest_processes > 1
                else None
            ),
        )
        # With an external broker other replicas may run: relay live events through it (embedded: one replica).
        event_relay: EventRelay | None = None  # made below, once the link it publishes through exists

        async def on_message(name: str, payload: bytes, retained: bool) -> None:
            if event_relay is not None and events_origin(name) is not None:
                await event_relay.handle(name, payload)
            else:
                await ingest.accept(name, payload, retained)

        link: BrokerLink
        if broker is not None:  # in-process: straight from the broker's consumer hook, no MQTT connection
            embedded = EmbeddedLink(broker, service_filters(), ingest.accept, registry)
            broker.add_consumer(embedded.consume)
            link = embedded
        else:
            client_id = f"_fleet-service-{settings.replica_id}"[:64]  # never a valid device id
            group = "fleet" if settings.use_shared_subscriptions else None
            link = MqttLink(
                BrokerTarget(settings.broker_url),
                client_id,
                service_filters(group) + [events_filter()],
                on_message,
                registry,
            )
        loop_db = LoopDatabase.beside(engine)  # PostgreSQL: one-statement work on a request's path, awaited
        dispatcher = Dispatcher(engine, link, bus, loop_db)
        if broker is None:
            event_relay = EventRelay(bus, link.publish, registry, relay_name(settings.replica_id))
            bus.taps.append(event_relay.tap)
        registry.gauge_callback("fleet_devices_online", lambda: count_online(engine))
        registry.gauge_callback("fleet_events_published_total", lambda: bus.published)
        registry.gauge_callback("fleet_events_relay_gaps_total", lambda: bus.origins.gaps)
        ingest.acks.publish = link.publish
        configs = DesiredConfigs(engine, link, bus)
        rollouts = RolloutEngine(engine, dispatcher, bus)
        dispatcher.listeners.append(rollouts.on_command)
        relay = RelayHub(link, registry)
        ingest.relay_handler = relay.up
        terminals = TerminalHub(link, bus, registry, settings.terminal_window_bytes)
        ingest.term_handler = terminals.up
        turn, turn_off_reason = build_issuer(settings, embedded=broker is not None)
        if turn is not None:
            register_metrics(registry, turn)
        mosquitto = None
        if settings.mosquitto_managed and broker is None:
            files = MosquittoFiles.from_settings(settings, engine)
            mosquitto = MosquittoManager(files)
            registry.gauge_callback("fleet_mosquitto_reloads_total", lambda: files.reloads)
            registry.gauge_callback("fleet_mosquitto_sync_failures_total", lambda: files.failures)
        plugin_auth = None
        if settings.mosquitto_plugin_auth and broker is None:
            plugin_auth = PluginCredentials.from_settings(settings, engine)
            creds = plugin_auth
            registry.gauge_callback("fleet_mosquitto_sync_failures_total", lambda: creds.failures)
            registry.gauge_callback("fleet_mosquitto_units_need_rotate", lambda: len(creds.need_rotate))
        auth = Authenticator(engine, settings.admin_token, loop_db=loop_db)
        broker_auth = None
        if settings.broker_auth_token is not None:
            broker_auth = BrokerAuth(
                engine,
                auth,
                registry,
                settings.service_account_secret,
                settings.auth_failures_per_source,
                settings.auth_window_s,
            )
        ctx = cls(
            settings,
            engine,
            registry,
            bus,
            auth,
            link,
            ingest,
            dispatcher,
            configs=configs,
            rollouts=rollouts,
            relay=relay,
            terminals=terminals,
            limits=AuthLimits(
                settings.auth_failures_per_user, settings.auth_failures_per_source, settings.auth_window_s
            ),
            sessions=SessionStore(engine, settings.session_idle_s, settings.session_max_age_s),
            turn=turn,
            turn_off_reason=turn_off_reason,
            alerts=AlertEvaluator(
                engine,
                bus,
                settings.replica_id,
                interval_s=settings.alert_eval_interval_s,
                full_interval_s=settings.alert_full_eval_interval_s,
                lease_s=max(settings.alert_lease_s, 2 * settings.alert_eval_interval_s),
                wake_delay_s=settings.alert_wake_delay_s,
                retention_days=settings.alert_retention_days,
            ),
            notifier=Notifier(
                engine,
                bus,
                settings.replica_id,
                interval_s=settings.notify_interval_s,
                lease_s=max(settings.notify_lease_s, 3 * settings.notify_interval_s),
                timeout_s=settings.notify_send_timeout_s,
                retry=Retry(
                    base_s=settings.notify_retry_base_s,
                    cap_s=settings.notify_retry_cap_s,
                    max_attempts=settings.notify_max_attempts,
                    max_age_s=settings.notify_max_age_s,
                ),
                dashboard_url=settings.public_url,
                retention_days=settings.alert_retention_days,
            ),
            broker=broker,
            event_relay=event_relay,
            mosquitto=mosquitto,
            plugin_auth=plugin_auth,
            broker_auth=broker_auth,
            loop_db=loop_db,
        )
        ingest.listeners.append(ctx._on_outcome)
        ingest.listeners.append(rollouts.on_outcome)
        link.on_connect.append(ctx._on_broker_connect)
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
        if s.metric_retention_days is not None:
            log.warning(
                "FLEET_METRIC_RETENTION_DAYS is deprecated: raw samples are kept %d h; "
                "set FLEET_METRIC_RAW_RETENTION_H (and FLEET_METRIC_1M_RETENTION_DAYS, FLEET_METRIC_1H_RETENTION_DAYS)",
                s.metric_raw_retention_h,
            )
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
                run_retention(
                    self.engine,
                    self.registry,
                    Keep(
                        log_days=s.log_retention_days,
                        raw_hours=s.metric_raw_retention_h,
                        minute_days=s.metric_1m_retention_days,
                        hour_days=s.metric_1h_retention_days,
                        audit_days=s.audit_retention_days,
                        ahead_days=s.partitions_ahead_days,
                    ),
                    log_rows_per_unit=s.log_rows_per_unit,
                ),
                name="retention",
            ),
            asyncio.create_task(self.configs.follow_devices(), name="config-follower"),
            asyncio.create_task(self.alerts.run(), name="alert-evaluator"),
            asyncio.create_task(self.alerts.follow(), name="alert-wake"),
            asyncio.create_task(self.notifier.run(), name="notifier"),
            asyncio.create_task(self.notifier.follow(), name="notifier-wake"),
            asyncio.create_task(self.terminals.run(), name="terminal-keepalive"),
            asyncio.create_task(self.terminals.follow_presence(), name="terminal-presence"),
            asyncio.create_task(
                run_terminal_retention(
                    self.engine, s.replica_id, s.terminal_recording_retention_days, s.audit_retention_days
                ),
                name="terminal-retention",
            ),
        ]
        if self.event_relay is not None:
            self.tasks.append(asyncio.create_task(self.event_relay.run(), name="event-relay"))
        if self.mosquitto is not None:
            self.tasks.append(asyncio.create_task(self.mosquitto.run(), name="mosquitto-files"))
        if self.plugin_auth is not None:
            manager = PluginAuthManager(self.plugin_auth)
            self.tasks.append(asyncio.create_task(manager.run(), name="mosquitto-plugin-reconcile"))

    async def stop(self) -> None:
        self.terminals.stop()
        await self.ingest.drain(timeout=5)
        await self.ingest.acks.drain(timeout=2)
        self.link.close()  # embedded: units held back for ingest must not hold up the broker's shutdown
        background = [*self.tasks, *self.dispatcher.background, *self.configs.background]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.turn is not None:
            await self.turn.aclose()
        if self.ingest.processes is not None:
            await asyncio.to_thread(self.ingest.processes.close)
        if self.loop_db is not None:
            await self.loop_db.dispose()
        self.engine.dispose()
