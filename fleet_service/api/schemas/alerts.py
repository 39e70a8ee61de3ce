"""Alerts, alert rules and silences (fleet_service/alerts: alert_public, rule_public, silence_public)."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Public

__all__ = [
    "AlertDetail",
    "AlertEventPublic",
    "AlertListed",
    "AlertPublic",
    "AlertRulePublic",
    "AlertSummary",
    "SilencePublic",
    "UnitAlertCounts",
]


class AlertPublic(Public):
    id: int
    rule_id: str
    rule_name: str
    kind: str
    severity: str
    device_id: str
    state: str  # firing | acknowledged | resolved
    value: Any  # what fired it: a number, the failing services, the extra value, the config versions, the log
    # line count with a sample line, the failed command or the aborted rollout ...
    fired_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    resolved_at: str | None
    resolved_by: str | None  # "auto" when the condition cleared
    silenced: bool
    silence_id: str | None


class AlertListed(AlertPublic):
    silenced_by: str | None  # the active silence that covers this open alert now (null for resolved alerts)


class AlertEventPublic(Public):
    id: int
    type: str  # fired | acknowledged | resolved
    time: str
    actor: str
    value: Any
    silenced: bool


class AlertDetail(AlertListed):
    events: list[AlertEventPublic]


class UnitAlertCounts(Public):
    device_id: str
    open: int  # firing or acknowledged
    firing: int  # of them: not acknowledged and not silenced now
    worst: str  # the worst severity of its open alerts


class AlertSummary(Public):
    firing: int  # the fleet's alerts that need someone: firing, not acknowledged, no active silence covers them
    firing_worst: str | None  # the worst severity among those
    open: int  # the fleet's open alerts (firing or acknowledged, silenced or not)
    units: list[UnitAlertCounts]  # the units asked for that have open alerts, by id


class AlertRulePublic(Public):
    id: str
    name: str
    kind: str
    severity: str
    enabled: bool
    tag: str | None
    device_id: str | None
    field: str
    op: str
    threshold: float | None
    clear_threshold: float | None
    value: str | int | float | bool | None
    level: str  # log: the lowest level counted (empty: every level)
    pattern: str  # log: what a counted line contains (a regular expression when `regex`)
    regex: bool
    window_s: float | None  # log: the counting window; command/rollout failed: how long a failure counts
    for_s: float
    clear_for_s: float
    builtin: str | None  # the built-in default this rule started as
    created_at: str
    updated_at: str
    updated_by: str


class SilencePublic(Public):
    id: str
    rule_id: str | None
    device_id: str | None
    tag: str | None
    severity: str | None
    starts_at: str
    ends_at: str
    active: bool
    comment: str
    created_by: str
    created_at: str
