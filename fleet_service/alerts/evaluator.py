"""The evaluator: one replica at a time (the `alert_lease` row) reads the units' latest state on a timer, or
soon after ingest reported a change (live events, from any replica), moves each rule x unit condition and
writes what changed. Ingest itself does no alert work.

Every evaluation is one transaction that first renews the lease with a conditional UPDATE: a replica that lost
the lease (paused past its expiry) writes nothing, and on PostgreSQL the renewal's row lock orders evaluators.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts import lifecycle
from fleet_service.alerts.evaluate import IDLE, Condition, Reading, Rule, Unit, read, step
from fleet_service.alerts.models import OPEN, Alert, AlertCondition, AlertEvent, AlertLease, AlertRule, Silence
from fleet_service.alerts.silences import active_silences, matching
from fleet_service.alerts.sources import ENDED, SOURCE_KINDS, Heard, pseudo_unit, rollout_readings, unit_readings
from fleet_service.alerts.wake import worth_waking
from fleet_service.devices.models import LEVEL_NUMBERS, Device
from fleet_service.devices.tags import units_with_tag
from fleet_service.live.bus import Event, EventBus
from protocol.ids import now_ms

log = logging.getLogger(__name__)

LEASE = "evaluator"
WAKE_EVENTS = frozenset({"presence", "metrics", "heartbeat", "config", "log", "command"})
_UNIT_COLUMNS: tuple[Any, ...] = (
    Device.id,
    Device.tags,
    Device.online,
    Device.last_seen,
    Device.online_changed_at,
    Device.last_metrics,
    Device.desired_version,
    Device.reported_version,
    Device.config_status,
)
_CHUNK = 1000


def take_lease(s: Session, holder: str, now: int, lease_ms: int) -> bool:
    """Take or renew the lease in the caller's transaction: only if this replica holds it or it has expired."""
    result = s.exec(
        update(AlertLease)
        .where(col(AlertLease.name) == LEASE, or_(col(AlertLease.holder) == holder, col(AlertLease.expires_at) < now))
        .values(holder=holder, expires_at=now + lease_ms)
    )
    return result.rowcount == 1


def _units(s: Session, only: set[str] | None) -> dict[str, Unit]:
    query = sa_select(*_UNIT_COLUMNS)
    if only is None:
        rows: list[Any] = list(s.execute(query).all())
    else:
        ids, rows = sorted(only), []
        for start in range(0, len(ids), _CHUNK):
            rows += s.execute(query.where(col(Device.id).in_(ids[start : start + _CHUNK]))).all()
    return {r[0]: Unit(*r) for r in rows}


def _conditions(s: Session, only: set[str] | None) -> dict[tuple[str, str], AlertCondition]:
    query = select(AlertCondition)
    if only is not None:
        query = query.where(col(AlertCondition.device_id).in_(sorted(only)))
    return {(c.rule_id, c.device_id): c for c in s.exec(query).all()}


def _as_condition(row: AlertCondition) -> Condition:
    return Condition(row.pending_since, row.firing, row.clearing_since, row.alert_id)


@dataclass
class _Change:
    """One rule x unit whose condition moved: what to write, and the alert transition it makes (if any)."""

    rule: Rule | None  # None: the rule is no longer evaluated for this unit (disabled, deleted, out of scope)
    rule_id: str
    unit: Unit | None
    device_id: str
    before: Condition
    after: Condition
    action: str | None  # "fire", "resolve", "drop" or None (only the condition changed)
    value: Any = None


def _scope(rule: Rule, units: dict[str, Unit], tagged: dict[str, set[str]]) -> Iterable[Unit]:
    if rule.device_id is not None:
        return [units[rule.device_id]] if rule.device_id in units else []
    if rule.tag is not None:
        return [units[d] for d in tagged[rule.tag] if d in units]
    return units.values()


def _plan(s: Session, now: int, only: set[str] | None, heard: Heard | None = None) -> list[_Change]:
    """Read the rules, the units' latest state and the stored conditions; return what changes. Nothing is written
    here, so no write lock is held while every unit is read (SQLite: ingest keeps writing meanwhile)."""
    heard = heard if heard is not None else Heard()
    rules = [Rule.of(r) for r in s.exec(select(AlertRule).where(col(AlertRule.enabled) == True)).all()]  # noqa: E712
    units = _units(s, only)
    stored = {key: _as_condition(row) for key, row in _conditions(s, only).items()}
    tagged = {tag: set(s.exec(units_with_tag(tag)).all()) for tag in {r.tag for r in rules if r.tag}}
    scopes = {r.id: list(_scope(r, units, tagged)) for r in rules if r.kind != "rollout_failed"}
    sourced = [r for r in rules if r.kind in SOURCE_KINDS]
    ids = {r.id: {u.id for u in scopes[r.id]} for r in sourced}
    readings = unit_readings(s, sourced, units, ids, stored, heard, now, only is None)
    changes: list[_Change] = []

    def moved(rule: Rule, unit: Unit, reading: Reading | None) -> None:
        before = stored.pop((rule.id, unit.id), IDLE)
        after, action = step(rule, before, reading, now)
        if action is not None or after != before:
            value = reading.value if reading is not None else None
            changes.append(_Change(rule, rule.id, unit, unit.id, before, after, action, value))

    for rule in rules:
        if rule.kind == "rollout_failed":
            continue
        for unit in scopes[rule.id]:
            moved(rule, unit, readings.get((rule.id, unit.id)) if rule.kind in SOURCE_KINDS else read(rule, unit))
    rollout_rules = [r for r in rules if r.kind == "rollout_failed"]
    if rollout_rules and (only is None or heard.rollouts):
        if only is not None:  # their conditions are kept under pseudo units, never among the woken ones
            wanted = [r.id for r in rollout_rules]
            rows = s.exec(select(AlertCondition).where(col(AlertCondition.rule_id).in_(wanted))).all()
            stored.update({(c.rule_id, c.device_id): _as_condition(c) for c in rows})
        per_rule = rollout_readings(s, rollout_rules, now)
        for rule in rollout_rules:
            seen = per_rule[rule.id]
            for device_id in sorted({d for (r, d) in stored if r == rule.id} | set(seen)):
                moved(rule, pseudo_unit(device_id), seen.get(device_id))
    for (rule_id, device_id), before in stored.items():
        changes.append(_Change(None, rule_id, None, device_id, before, IDLE, "drop"))
    return changes


def _fire(s: Session, rule: Rule, unit: Unit, value: Any, now: int, silences: list[Silence]) -> Alert:
    open_alert = s.exec(
        select(Alert).where(col(Alert.rule_id) == rule.id, col(Alert.device_id) == unit.id, col(Alert.state).in_(OPEN))
    ).first()
    if open_alert is not None:  # its condition row was lost (a rule edit): keep the one open alert
        return open_alert
    silence = matching(silences, rule.id, rule.severity, unit.id, unit.tags)
    return lifecycle.fire(s, rule, unit.id, value, now, silence)


def _apply(s: Session, change: _Change, now: int, silences: list[Silence]) -> dict | None:
    """Write one change; returns the alert's public shape when the alert changed."""
    after, alert = change.after, None
    if change.action == "fire" and change.rule is not None and change.unit is not None:
        alert = _fire(s, change.rule, change.unit, change.value, now, silences)
        after = Condition(firing=True, alert_id=alert.id)
    elif change.action in ("resolve", "drop") and change.before.alert_id is not None:
        by = "auto" if change.action == "resolve" else "out of scope"
        alert = lifecycle.resolve(s, change.before.alert_id, now, by, change.value)
    # Replaced whole: a row an admin's rule edit removed meanwhile is simply written again.
    key = (col(AlertCondition.rule_id) == change.rule_id, col(AlertCondition.device_id) == change.device_id)
    s.exec(delete(AlertCondition).where(*key))
    if not after.idle:
        s.add(AlertCondition(rule_id=change.rule_id, device_id=change.device_id, **asdict(after)))
    return lifecycle.alert_public(alert) if alert is not None else None


def evaluate(
    engine: Engine, holder: str, lease_ms: int, only: set[str] | None = None, heard: Heard | None = None
) -> list[dict] | None:
    """One evaluation of every enabled rule over every unit (or over the units in `only`); None when this replica
    does not hold the lease. `heard` is what the live bus announced (lines logged, commands ended, rollouts
    changed) since the last one. Returns the public shapes of the alerts that changed, to announce after commit."""
    now = now_ms()
    heard = heard if heard is not None else Heard()
    with Session(engine) as s:
        held = take_lease(s, holder, now, lease_ms)
        s.commit()
    if not held:
        return None
    with Session(engine) as s:
        changes = _plan(s, now, only, heard)
    if not changes:
        return []
    changed: list[dict] = []
    with Session(engine) as s:
        if not take_lease(s, holder, now_ms(), lease_ms):  # lost meanwhile: the new holder decides
            s.rollback()
            return None
        rule_ids = {c.rule_id for c in changes if c.rule is not None}
        alive = set(s.exec(select(AlertRule.id).where(col(AlertRule.id).in_(rule_ids))).all()) if rule_ids else set()
        silences = active_silences(s, now) if any(c.action == "fire" for c in changes) else []
        for change in changes:
            if change.rule is not None and change.rule_id not in alive:
                continue  # deleted meanwhile: its conditions and alerts went with it
            alert = _apply(s, change, now, silences)
            if alert is not None:
                changed.append(alert)
        s.commit()
    return changed


@dataclass(frozen=True)
class Watch:
    """What the evaluator knows between evaluations: the enabled rules (what `wake.worth_waking` checks events
    against), the units with a condition under way (what a timer pass reads), and a fingerprint of every rule
    (a change in it calls for a pass over every unit)."""

    rules: list[Rule]
    watching: set[str]
    fingerprint: tuple[int, int]


def watch_state(engine: Engine) -> Watch:
    with Session(engine) as s:
        rows = s.exec(select(AlertRule)).all()
        watching = set(s.exec(select(AlertCondition.device_id).distinct()).all())
    rules = [Rule.of(r) for r in rows if r.enabled]
    return Watch(rules, watching, (len(rows), max((r.updated_at for r in rows), default=0)))


def _evaluate_and_watch(
    engine: Engine, holder: str, lease_ms: int, only: set[str] | None, heard: Heard
) -> tuple[list[dict] | None, Watch | None]:
    changed = evaluate(engine, holder, lease_ms, only, heard)
    return changed, (watch_state(engine) if changed is not None else None)


def prune(engine: Engine, days: int, batch: int = 1000) -> int:
    """Delete resolved alerts (with their history) and silences that ended more than `days` ago."""
    if days <= 0:
        return 0
    cutoff = now_ms() - days * 86_400_000
    removed = 0
    with Session(engine) as s:
        while True:
            ids = s.exec(
                select(Alert.id).where(col(Alert.state) == "resolved", col(Alert.resolved_at) < cutoff).limit(batch)
            ).all()
            if not ids:
                break
            s.exec(delete(AlertEvent).where(col(AlertEvent.alert_id).in_(ids)))
            s.exec(delete(Alert).where(col(Alert.id).in_(ids)))
            s.commit()
            removed += len(ids)
        s.exec(delete(Silence).where(col(Silence.ends_at) < cutoff))
        s.commit()
    return removed


class AlertEvaluator:
    """Runs `evaluate` on this replica while it holds the lease (see `run` for when, over which units)."""

    def __init__(
        self,
        engine: Engine,
        bus: EventBus,
        replica: str,
        *,
        interval_s: float,
        full_interval_s: float,
        lease_s: float,
        wake_delay_s: float,
        retention_days: int,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.holder = f"{replica}-{secrets.token_hex(4)}"
        self.interval_s = interval_s
        self.full_interval_s = max(full_interval_s, interval_s)
        self.lease_ms = int(lease_s * 1000)
        self.wake_delay_s = wake_delay_s
        self.retention_days = retention_days
        self.holding = False
        self._dirty: set[str] = set()
        self._heard = Heard()
        self._wake = asyncio.Event()
        self._rules: list[Rule] = []  # as of the last evaluation: what a live event is checked against
        self._watching: set[str] = set()  # units with a condition under way, as of the last evaluation
        self._fingerprint: tuple[int, int] | None = None

    def poke(self, device_id: str) -> None:
        """A unit's state changed: evaluate it soon (when this replica evaluates at all)."""
        if self.holding:
            self._dirty.add(device_id)
            self._wake.set()

    def hear(self, event: Event) -> None:
        """Note what a live event says for the rules that read lines, commands and rollouts; wake for it."""
        if not self.holding:
            return
        if event.type == "rollout":
            if event.data.get("state") in ("completed", "aborted"):
                self._heard.rollouts = True
                self._wake.set()
            return
        if event.type not in WAKE_EVENTS or not event.device_id:
            return
        if event.type == "log":
            level = LEVEL_NUMBERS.get(str(event.data.get("level")), 0)
            self._heard.logs[event.device_id] = max(level, self._heard.logs.get(event.device_id, 0))
        elif event.type == "command" and event.data.get("status") in ENDED:
            self._heard.commands.add(event.device_id)
        if worth_waking(event.type, event.device_id, event.data, self._rules, self._watching):
            self.poke(event.device_id)

    async def follow(self) -> None:
        """Wake on the live events of every replica (the bus carries the other replicas' events too)."""
        while True:
            async for event in self.bus.subscribe(types=WAKE_EVENTS | {"rollout"}):
                self.hear(event)
            await asyncio.sleep(0.1)  # dropped as a slow subscriber: follow again

    async def run(self) -> None:
        """Three kinds of evaluation: over every unit every `full_interval_s` (and at once when a rule changed,
        or this replica just took the lease); over the units with a condition under way every `interval_s` (time
        moves those: pending long enough, clear long enough, a log window passing); over the units a live event
        woke, `wake_delay_s` after the first."""
        loop = asyncio.get_running_loop()
        next_full = next_tick = 0.0
        next_prune = loop.time() + 60
        while True:
            now = loop.time()
            full = now >= next_full
            tick = full or now >= next_tick
            heard, self._heard = self._heard, Heard(looks=self._heard.looks)
            only: set[str] | None = None
            if not full:
                only = set(self._dirty)
                if tick:  # rollout conditions are kept under pseudo units: read through their own branch
                    only |= {d for d in self._watching if ":" not in d}
                    heard.rollouts = True
            self._dirty = set()
            self._wake.clear()
            try:
                changed, watch = await asyncio.to_thread(
                    _evaluate_and_watch, self.engine, self.holder, self.lease_ms, only, heard
                )
            except Exception:
                log.exception("alert evaluation failed")
                changed, watch = None, None
            was_holding, self.holding = self.holding, changed is not None
            rules_changed = False
            if watch is not None:
                self._rules, self._watching = watch.rules, watch.watching
                # (after a full pass too: an edit may have landed between its read and this one)
                rules_changed = self._fingerprint is not None and watch.fingerprint != self._fingerprint
                self._fingerprint = watch.fingerprint
            if not self.holding:  # whoever evaluates next looks for itself
                self._heard = Heard()
                next_full = now + self.interval_s  # try for the lease at the timer's pace, with a full pass
            elif full:
                next_full = now + self.full_interval_s
            elif not was_holding:
                next_full = 0.0  # took over in a partial pass: read every unit once
            if rules_changed:
                next_full = 0.0  # a rule was made, edited, enabled or deleted: every unit, now
            for alert in changed or []:
                self.bus.publish("alert", alert, alert["device_id"])
            if tick:
                next_tick = now + self.interval_s
            if self.holding and loop.time() >= next_prune:
                next_prune = loop.time() + 3600
                try:
                    await asyncio.to_thread(prune, self.engine, self.retention_days)
                except Exception:
                    log.exception("alert retention failed")
            wait = max(0.0, min(next_tick, next_full) - loop.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
                await asyncio.sleep(self.wake_delay_s)  # gather the changes of a burst into one evaluation
            except TimeoutError:
                pass
