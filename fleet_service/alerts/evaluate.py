"""What a rule says about one unit now, and how a rule x unit condition moves: pending -> firing -> clearing.

Pure functions over the unit's latest state (the `device` row): no history is read (the log, command_failed and
rollout_failed readings, which look at recent lines and ended commands, are made in `sources`). A reading of None means
"cannot tell" (a metric the unit does not report, any metric of an offline unit): the condition stays as it is,
so a unit going quiet neither fires nor clears an alert by itself (the offline rule covers silence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from fleet_service.alerts.models import METRIC_FIELDS, AlertRule


@dataclass(frozen=True)
class Rule:
    """A rule's parameters as plain values: read for every unit, so not through the ORM's attributes."""

    id: str
    name: str
    kind: str
    severity: str
    tag: str | None
    device_id: str | None
    field: str
    op: str
    threshold: float | None
    clear_threshold: float | None
    value: Any
    for_s: float
    clear_for_s: float
    level: str = ""
    pattern: str = ""
    regex: bool = False
    window_s: float | None = None

    @classmethod
    def of(cls, r: AlertRule) -> Rule:
        return cls(
            r.id,
            r.name,
            r.kind,
            r.severity,
            r.tag,
            r.device_id,
            r.field,
            r.op,
            r.threshold,
            r.clear_threshold,
            r.value,
            r.for_s,
            r.clear_for_s,
            r.level,
            r.pattern,
            r.regex,
            r.window_s,
        )


@dataclass(frozen=True)
class Unit:
    """The columns of a `device` row the rules read."""

    id: str
    tags: list[str]
    online: bool
    last_seen: int | None
    online_changed_at: int | None
    metrics: dict[str, Any]
    desired_version: int
    reported_version: int
    config_status: str | None


@dataclass(frozen=True)
class Reading:
    breach: bool  # the firing condition holds
    clear: bool  # the clearing condition holds (past the clear line: not simply "no breach")
    value: Any  # what the alert shows as the value that fired (or cleared) it
    since: int | None = None  # when the condition began, when the unit's own state says so (offline)


@dataclass(frozen=True)
class Condition:
    pending_since: int | None = None
    firing: bool = False
    clearing_since: int | None = None
    alert_id: int | None = None

    @property
    def idle(self) -> bool:
        return not self.firing and self.pending_since is None


IDLE = Condition()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps `true` apart from 1 (Python's True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return a == b


def _simple(breach: bool, value: Any) -> Reading:
    return Reading(breach, not breach, value)


def read(rule: Rule, unit: Unit) -> Reading | None:
    if rule.kind == "offline":
        if unit.last_seen is None:  # enrolled but never connected: not installed yet, not "offline"
            return None
        if unit.online:
            return Reading(False, True, None)
        since = unit.online_changed_at or unit.last_seen
        return Reading(True, False, {"offline_since_ms": since}, since=since)
    if not unit.online or not unit.metrics and rule.kind != "config_sync":
        return None
    if rule.kind == "metric":
        raw = unit.metrics.get(rule.field) if rule.field in METRIC_FIELDS else _extra(unit).get(rule.field)
        number = _number(raw)
        if number is None or rule.threshold is None:
            return None
        line = rule.threshold
        clear_line = rule.clear_threshold if rule.clear_threshold is not None else line
        if rule.op == ">":
            return Reading(number > line, number <= clear_line, number)
        return Reading(number < line, number >= clear_line, number)
    if rule.kind == "service":
        services = unit.metrics.get("services")
        if not isinstance(services, dict):
            return None
        if rule.field:
            state = services.get(rule.field)
            failing = {} if state is None or state == "active" else {rule.field: state}
        else:
            failing = {name: state for name, state in services.items() if state != "active"}
        return _simple(bool(failing), failing)
    if rule.kind == "extra":
        extra = _extra(unit)
        if rule.field not in extra:
            return None
        value = extra[rule.field]
        equal = _same(value, rule.value)
        return _simple(equal if rule.op == "==" else not equal, value)
    if rule.kind == "config_sync":
        out = unit.desired_version > 0 and (
            unit.reported_version != unit.desired_version or unit.config_status == "failed"
        )
        value = {
            "desired_version": unit.desired_version,
            "reported_version": unit.reported_version,
            "status": unit.config_status,
        }
        return _simple(out, value)
    return None


def _extra(unit: Unit) -> dict[str, Any]:
    extra = unit.metrics.get("extra")
    return extra if isinstance(extra, dict) else {}


def step(rule: Rule, cond: Condition, reading: Reading | None, now: int) -> tuple[Condition, str | None]:
    """The condition after this reading, and "fire", "resolve" or None. A breach must hold `for_s` before the
    alert fires; once firing, the clear condition (past the clear line) must hold `clear_for_s` before it
    resolves, and a reading between the lines keeps it firing: a value hovering at the line is one alert."""
    if reading is None:
        return cond, None
    if not cond.firing:
        if not reading.breach:
            return (cond if cond.pending_since is None else replace(cond, pending_since=None)), None
        since = reading.since if reading.since is not None else (cond.pending_since or now)
        if now - since >= rule.for_s * 1000:
            return Condition(firing=True, alert_id=cond.alert_id), "fire"
        return (cond if cond.pending_since == since else replace(cond, pending_since=since)), None
    if not reading.clear:
        return (cond if cond.clearing_since is None else replace(cond, clearing_since=None)), None
    clearing = cond.clearing_since or now
    if now - clearing >= rule.clear_for_s * 1000:
        return IDLE, "resolve"
    return (cond if cond.clearing_since == clearing else replace(cond, clearing_since=clearing)), None
