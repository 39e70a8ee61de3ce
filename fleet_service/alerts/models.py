"""The alert tables: rules, the evaluator's per rule x unit condition state, alerts with their history,
silences, and the lease that lets one replica evaluate at a time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index, text
from sqlmodel import Field, SQLModel

from fleet_service.db.columns import BIG_ID, ms_field
from protocol.payloads import METRIC_FIELDS as METRIC_FIELD_NAMES

KINDS = ("offline", "metric", "service", "extra", "config_sync", "log", "command_failed", "rollout_failed")
SEVERITIES = ("info", "warning", "critical")
STATES = ("firing", "acknowledged", "resolved")
OPEN = ("firing", "acknowledged")
# The numeric fields of a metrics sample; any other name is looked up in its `extra`.
METRIC_FIELDS = frozenset(METRIC_FIELD_NAMES)


class AlertRule(SQLModel, table=True):
    """What to watch. `field` is the metric (a numeric field of the metrics payload or a key of `extra`), the
    service (empty: any configured service), the `extra` key or the command name (empty: any command) of a
    command_failed or rollout_failed rule, after the kind. `builtin` names a default the
    first migration created; an admin may edit or delete it and it is never created again."""

    __tablename__ = "alert_rule"

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    severity: str = Field(default="warning", max_length=16)
    enabled: bool = True
    tag: str | None = Field(default=None, max_length=64)  # scope: units carrying this tag ...
    device_id: str | None = Field(default=None, max_length=63)  # ... or this one unit; neither: every unit
    field: str = Field(default="", max_length=128)
    op: str = Field(default="", max_length=2)  # ">" "<" (metric), "==" "!=" (extra)
    threshold: float | None = None
    clear_threshold: float | None = None  # hysteresis: back across this line to clear (default: the threshold)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))  # the extra value compared with
    level: str = Field(default="", max_length=16)  # log: the lowest level counted (empty: every level)
    pattern: str = Field(default="", max_length=200)  # log: what a line contains (empty: every line) ...
    regex: bool = False  # ... or, when set, a regular expression searched for in it
    window_s: float | None = None  # log: the counting window; command/rollout failed: how long a failure counts
    for_s: float = 0.0  # the condition holds this long before the alert fires
    clear_for_s: float = 0.0  # and is clear this long before it resolves
    builtin: str | None = Field(default=None, max_length=32)
    created_at: int = ms_field()
    updated_at: int = ms_field()
    updated_by: str = Field(default="", max_length=200)


class AlertCondition(SQLModel, table=True):
    """Where one rule stands for one unit between evaluations, shared by every replica. Only a rule x unit that
    is pending, firing or clearing has a row; written only when it changes."""

    __tablename__ = "alert_condition"

    rule_id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(primary_key=True, max_length=63)
    pending_since: int | None = ms_field(default=None, nullable=True)
    firing: bool = False
    clearing_since: int | None = ms_field(default=None, nullable=True)
    alert_id: int | None = ms_field(default=None, nullable=True)


class Alert(SQLModel, table=True):
    """One firing of a rule for a unit, until it resolves; at most one open per rule x unit (a partial unique
    index keeps it so whatever the evaluators do)."""

    __table_args__ = (
        Index(
            "ux_alert_open",
            "rule_id",
            "device_id",
            unique=True,
            sqlite_where=text("state != 'resolved'"),
            postgresql_where=text("state <> 'resolved'"),
        ),
        Index("ix_alert_fired_at", "fired_at"),
        Index("ix_alert_device", "device_id", "fired_at"),
        Index("ix_alert_resolved_at", "resolved_at"),
    )

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    rule_id: str = Field(max_length=32)
    rule_name: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    severity: str = Field(max_length=16)
    device_id: str = Field(max_length=63)
    state: str = Field(default="firing", max_length=16)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))  # what fired it
    fired_at: int = ms_field()
    acknowledged_at: int | None = ms_field(default=None, nullable=True)
    acknowledged_by: str | None = Field(default=None, max_length=200)
    resolved_at: int | None = ms_field(default=None, nullable=True)
    resolved_by: str | None = Field(default=None, max_length=200)  # "auto", "rule deleted", ...
    silenced: bool = False
    silence_id: str | None = Field(default=None, max_length=32)


class AlertEvent(SQLModel, table=True):
    """Every transition of an alert, in order: the history the API shows and the one place a notifier reads."""

    __tablename__ = "alert_event"
    __table_args__ = (Index("ix_alert_event_alert", "alert_id", "id"),)

    id: int | None = Field(default=None, sa_type=BIG_ID, primary_key=True)
    alert_id: int = Field(sa_type=BIG_ID)
    ts: int = ms_field()
    type: str = Field(max_length=16)  # fired | acknowledged | resolved
    actor: str = Field(default="", max_length=200)
    value: Any = Field(default=None, sa_column=Column(JSON, nullable=True))
    silenced: bool = False


class Silence(SQLModel, table=True):
    """Alertmanager's silence: alerts that match every given matcher while it is active are marked silenced."""

    id: str = Field(primary_key=True, max_length=32)
    rule_id: str | None = Field(default=None, max_length=32)
    device_id: str | None = Field(default=None, max_length=63)
    tag: str | None = Field(default=None, max_length=64)
    severity: str | None = Field(default=None, max_length=16)
    starts_at: int = ms_field()
    ends_at: int = ms_field(index=True)
    comment: str = Field(default="", max_length=1000)
    created_by: str = Field(max_length=200)
    created_at: int = ms_field()


class AlertLease(SQLModel, table=True):
    """Who evaluates: taken and renewed only with a conditional UPDATE, so one replica holds it at a time."""

    __tablename__ = "alert_lease"

    name: str = Field(primary_key=True, max_length=32)
    holder: str = Field(default="", max_length=128)
    expires_at: int = ms_field(default=0)
