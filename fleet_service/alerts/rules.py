"""Alert rules: what an admin may write (checked whole before anything is stored), and their public shape."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts import patterns
from fleet_service.alerts.lifecycle import resolve_open
from fleet_service.alerts.models import AlertCondition, AlertRule
from fleet_service.db.columns import iso
from fleet_service.errors import NotFound
from protocol.ids import is_device_id, new_id, now_ms
from protocol.payloads import COMMAND_NAMES
from protocol.tags import is_tag

MAX_DURATION_S = 30 * 86_400
MAX_LOG_WINDOW_S = 86_400  # a log rule counts over at most a day of one unit's lines
MAX_LOG_THRESHOLD = 10_000  # below the lines one reading looks at (evaluate_sources.MAX_LINES)
Seconds = Field(default=0.0, ge=0, le=MAX_DURATION_S)
# The parameters each kind takes (every other one must be left out).
WANTED = {
    "offline": set(),
    "config_sync": set(),
    "service": {"field"},
    "metric": {"field", "op", "threshold", "clear_threshold"},
    "extra": {"field", "op", "value"},
    "log": {"level", "pattern", "regex", "threshold", "window_s"},
    "command_failed": {"field", "window_s"},
    "rollout_failed": {"field", "window_s"},
}
_PARAMETERS = ("field", "op", "threshold", "clear_threshold", "value", "level", "pattern", "regex", "window_s")


class RuleSpec(BaseModel):
    """An alert rule as an admin writes it. Each kind takes only its own parameters:

    - offline: the unit has been offline `for_s`;
    - metric: `field` (a metrics field or a key of `extra`) `op` (">" or "<") `threshold` for `for_s`,
      cleared back across `clear_threshold` (default: the threshold) for `clear_for_s`;
    - service: the configured service `field` (empty: any) not "active" for `for_s`;
    - extra: `extra[field]` `op` ("==" or "!=") `value` for `for_s`;
    - config_sync: the reported configuration differs from the desired one (or failed) for `for_s`;
    - log: more than `threshold` lines at `level` or above containing `pattern` (a regular expression with
      `regex`) within the last `window_s`;
    - command_failed: the unit's last command named `field` (empty: of any name) ended failed, timed_out or
      rejected (within the last `window_s`, when given);
    - rollout_failed: the last rollout of the command `field` (empty: of any command) touching a unit in scope
      was aborted (within the last `window_s`, when given).
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["offline", "metric", "service", "extra", "config_sync", "log", "command_failed", "rollout_failed"]
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    tag: str | None = Field(default=None, description="scope: the units carrying this tag ...")
    device_id: str | None = Field(default=None, description="... or this one unit; neither: every unit")
    field: str = Field(default="", max_length=128)
    op: Literal["", ">", "<", "==", "!="] = ""
    threshold: float | None = None
    clear_threshold: float | None = None
    value: str | int | float | bool | None = None
    level: Literal["", "debug", "info", "notice", "warning", "error", "critical"] = ""
    pattern: str = Field(default="", description=f"at most {patterns.MAX_PATTERN} characters")
    regex: bool = False
    window_s: float | None = Field(default=None, gt=0, le=MAX_DURATION_S)
    for_s: float = Seconds
    clear_for_s: float = Seconds

    @model_validator(mode="after")
    def _consistent(self) -> RuleSpec:
        if self.tag is not None and self.device_id is not None:
            raise ValueError("give a tag or a device_id as the scope, not both")
        if self.tag is not None and not is_tag(self.tag):
            raise ValueError(f"invalid tag {self.tag!r}")
        if self.device_id is not None and not is_device_id(self.device_id):
            raise ValueError(f"invalid device id {self.device_id!r}")
        for name in ("threshold", "clear_threshold", "value"):
            number = getattr(self, name)
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"{name} must be a finite number")
        wanted = WANTED[self.kind]
        given = {n for n in _PARAMETERS if getattr(self, n) not in ("", None) and (n != "regex" or self.regex)}
        if given - wanted:
            raise ValueError(f"a {self.kind} rule takes no {', '.join(sorted(given - wanted))}")
        if self.kind == "metric":
            if not self.field or self.op not in (">", "<") or self.threshold is None:
                raise ValueError("a metric rule needs field, op (> or <) and threshold")
            c = self.clear_threshold
            if c is not None and (c > self.threshold if self.op == ">" else c < self.threshold):
                raise ValueError(
                    f"clear_threshold must lie on the clear side of the threshold ({self.op} means "
                    f"{'at or below' if self.op == '>' else 'at or above'} {self.threshold})"
                )
        if self.kind == "extra" and (not self.field or self.op not in ("==", "!=")):
            raise ValueError("an extra rule needs field and op (== or !=)")
        if self.kind == "log":
            self._log_rule()
        if self.kind in ("command_failed", "rollout_failed") and self.field and self.field not in COMMAND_NAMES:
            raise ValueError(f"field: a {self.kind} rule names a command ({', '.join(COMMAND_NAMES)}) or none")
        return self

    def _log_rule(self) -> None:
        k = self.threshold
        if k is None or k != int(k) or not 0 <= k <= MAX_LOG_THRESHOLD:
            raise ValueError(f"threshold: a log rule needs a whole number of lines from 0 to {MAX_LOG_THRESHOLD}")
        if self.window_s is None or self.window_s > MAX_LOG_WINDOW_S:
            raise ValueError(f"window_s: a log rule needs a window of at most {MAX_LOG_WINDOW_S} s")
        problem = patterns.check(self.pattern, self.regex)
        if problem is not None:
            raise ValueError(problem)


def rule_public(r: AlertRule) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "severity": r.severity,
        "enabled": r.enabled,
        "tag": r.tag,
        "device_id": r.device_id,
        "field": r.field,
        "op": r.op,
        "threshold": r.threshold,
        "clear_threshold": r.clear_threshold,
        "value": r.value,
        "level": r.level,
        "pattern": r.pattern,
        "regex": r.regex,
        "window_s": r.window_s,
        "for_s": r.for_s,
        "clear_for_s": r.clear_for_s,
        "builtin": r.builtin,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "updated_by": r.updated_by,
    }


def list_rules(engine: Engine) -> list[AlertRule]:
    with Session(engine) as s:
        return list(s.exec(select(AlertRule).order_by(col(AlertRule.created_at), col(AlertRule.id))).all())


def get_rule(engine: Engine, rule_id: str) -> AlertRule:
    with Session(engine) as s:
        rule = s.get(AlertRule, rule_id)
    if rule is None:
        raise NotFound(f"no alert rule with id {rule_id!r}")
    return rule


def create_rule(engine: Engine, spec: RuleSpec, who: str) -> AlertRule:
    now = now_ms()
    rule = AlertRule(id=new_id(), **spec.model_dump(), created_at=now, updated_at=now, updated_by=who)
    with Session(engine, expire_on_commit=False) as s:
        s.add(rule)
        s.commit()
    return rule


def update_rule(engine: Engine, rule_id: str, spec: RuleSpec, who: str) -> AlertRule:
    """Replace the rule's parameters. Its condition state starts over (the new thresholds and durations count
    from the next evaluation); an open alert stays open until the new rule clears it."""
    with Session(engine, expire_on_commit=False) as s:
        rule = s.get(AlertRule, rule_id)
        if rule is None:
            raise NotFound(f"no alert rule with id {rule_id!r}")
        for name, value in spec.model_dump().items():
            setattr(rule, name, value)
        rule.updated_at, rule.updated_by = now_ms(), who
        s.add(rule)
        s.exec(
            delete(AlertCondition).where(col(AlertCondition.rule_id) == rule_id, col(AlertCondition.firing) == False)  # noqa: E712
        )
        s.commit()
    return rule


def delete_rule(engine: Engine, rule_id: str, who: str) -> list[dict[str, Any]]:
    """Delete the rule, resolving its open alerts (by "rule deleted"); returns those alerts' new shape."""
    with Session(engine) as s:
        rule = s.get(AlertRule, rule_id)
        if rule is None:
            raise NotFound(f"no alert rule with id {rule_id!r}")
        resolved = resolve_open(s, rule_id, None, now_ms(), f"rule deleted by {who}")
        s.exec(delete(AlertCondition).where(col(AlertCondition.rule_id) == rule_id))
        s.delete(rule)
        s.commit()
    return resolved
