"""Readings of the rules that look past the `device` row: log lines in a window, commands and rollouts that ended.

None of them reads a history table whole. Each reading is an indexed query bounded twice, by time and by rows:

- log: one unit's lines since now - window_s (`ix_log_device_ts`), at most MAX_LINES of them, for a unit whose
  lines the live bus announced, that a look at the lines received since the last look found (`ix_log_received`),
  or whose condition is pending or firing (its window must pass);
- command_failed: one unit's last MAX_COMMANDS ended commands (`ix_command_device_finished`), for a unit whose
  command ended (live bus, or `ix_command_finished` since the last look) or whose condition is not idle;
- rollout_failed: the last MAX_ROLLOUTS rollouts that ended (`ix_rollout_finished`): a handful of rows.

The live bus carries every replica's `log` and `command` events, so the evaluator hears of a unit's lines
whichever replica took them; the database holds them all, so the count is the same whichever replica it was.
The look at what arrived since the last look (with LOOK_BACK_MS of overlap for transactions that committed late)
makes up for relay batches the broker lost: such a unit is read at the next full evaluation instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from fleet_service.alerts.evaluate import Condition, Reading, Rule, Unit
from fleet_service.alerts.patterns import matcher
from fleet_service.commands.models import Command
from fleet_service.devices.models import LEVEL_NUMBERS, LogRecord
from fleet_service.devices.tags import units_with_tag
from fleet_service.rollouts.models import Rollout, RolloutUnit

SOURCE_KINDS = frozenset({"log", "command_failed"})  # read per unit from a history table
MAX_LINES = 20_000  # lines one reading looks at (the newest ones): a rule's threshold stays below
MAX_COMMANDS = 50
MAX_ROLLOUTS = 50
LOOK_BACK_MS = 15_000
FAILED = ("failed", "timed_out", "rejected")
ENDED = ("succeeded", *FAILED)  # canceled and expired say nothing about whether the command works
SAMPLE_CHARS = 300
ROLLOUT_PREFIX = "rollout:"


@dataclass
class Looks:
    """Up to when this evaluator looked for new lines and ended commands (memory only: forgetting it, as a new
    lease holder does, costs one wider look)."""

    logs_at: int | None = None
    commands_at: int | None = None


@dataclass
class Heard:
    """What the live bus announced since the last evaluation."""

    logs: dict[str, int] = field(default_factory=dict)  # unit -> the highest level number of its new lines
    commands: set[str] = field(default_factory=set)  # units with a command that ended
    rollouts: bool = False  # a rollout changed
    looks: Looks = field(default_factory=Looks)


def _level(rule: Rule) -> int:
    return LEVEL_NUMBERS.get(rule.level, 0)


def _wanted(
    rule: Rule, units: dict[str, Unit], scope: set[str], heard: dict[str, int], stored: dict[tuple[str, str], Condition]
) -> list[Unit]:
    ids = {d for d, level in heard.items() if level >= _level(rule)} if rule.kind == "log" else set(heard)
    ids |= {d for (r, d), c in stored.items() if r == rule.id and not c.idle}
    return [units[d] for d in sorted(ids & scope) if d in units]


def _new_lines(s: Session, looks: Looks, rules: list[Rule], now: int) -> dict[str, int]:
    """Units with lines received since the last look (a new holder: within the longest window)."""
    since = looks.logs_at - LOOK_BACK_MS if looks.logs_at else now - int(max(r.window_s or 0 for r in rules) * 1000)
    query = (
        sa_select(col(LogRecord.device_id), func.max(col(LogRecord.level_no)))
        .where(col(LogRecord.received_at) >= since)
        .group_by(col(LogRecord.device_id))
    )
    found = {device_id: level for device_id, level in s.execute(query).all()}
    looks.logs_at = now
    return found


def _ended_commands(s: Session, looks: Looks, now: int) -> set[str]:
    since = looks.commands_at - LOOK_BACK_MS if looks.commands_at else now - 2 * LOOK_BACK_MS
    query = sa_select(col(Command.device_id)).where(col(Command.finished_at) >= since).distinct()
    found = set(s.execute(query).scalars().all())
    looks.commands_at = now
    return found


def count_lines(s: Session, rule: Rule, device_id: str, now: int) -> Reading:
    """More than `threshold` matching lines at the rule's level or above within the window?"""
    window_ms = int((rule.window_s or 0) * 1000)
    query = (
        sa_select(col(LogRecord.msg))
        .where(
            col(LogRecord.device_id) == device_id,
            col(LogRecord.ts) >= now - window_ms,
            col(LogRecord.level_no) >= _level(rule),
        )
        .order_by(col(LogRecord.ts).desc())
        .limit(MAX_LINES)
    )
    matches = matcher(rule.pattern, rule.regex)
    count, sample = 0, None
    for msg in s.execute(query).scalars():
        if matches(msg):
            count += 1
            sample = sample or msg[:SAMPLE_CHARS]
    over = count > (rule.threshold or 0)
    return Reading(over, not over, {"count": count, "window_s": rule.window_s, "sample": sample})


def command_outcome(s: Session, rule: Rule, device_id: str, now: int) -> Reading:
    """Did the unit's last command of a name (the rule's, or each name) end in a failure?"""
    query = sa_select(Command).where(col(Command.device_id) == device_id, col(Command.status).in_(ENDED))
    if rule.field:
        query = query.where(col(Command.name) == rule.field)
    rows = s.execute(query.order_by(col(Command.finished_at).desc()).limit(MAX_COMMANDS)).scalars().all()
    latest: dict[str, Command] = {}
    for cmd in rows:
        latest.setdefault(cmd.name, cmd)
    oldest = now - int(rule.window_s * 1000) if rule.window_s else None
    failed = [c for c in latest.values() if c.status in FAILED and (oldest is None or (c.finished_at or 0) >= oldest)]
    if not failed:
        return Reading(False, True, None)
    cmd = failed[0]  # the newest
    value = {
        "command_id": cmd.id,
        "name": cmd.name,
        "state": cmd.status,
        "exit_code": cmd.exit_code,
        "output": cmd.output[-SAMPLE_CHARS:],
        "finished_at_ms": cmd.finished_at,
    }
    return Reading(True, False, value)


def unit_readings(
    s: Session,
    rules: list[Rule],
    units: dict[str, Unit],
    scopes: dict[str, set[str]],
    stored: dict[tuple[str, str], Condition],
    heard: Heard,
    now: int,
    full: bool,
) -> dict[tuple[str, str], Reading]:
    """The log and command_failed readings this evaluation makes; a rule x unit left out reads as unknown."""
    out: dict[tuple[str, str], Reading] = {}
    log_rules = [r for r in rules if r.kind == "log"]
    command_rules = [r for r in rules if r.kind == "command_failed"]
    lines, commands = dict(heard.logs), set(heard.commands)
    if full and log_rules:
        for device_id, level in _new_lines(s, heard.looks, log_rules, now).items():
            lines[device_id] = max(level, lines.get(device_id, 0))
    if full and command_rules:
        commands |= _ended_commands(s, heard.looks, now)
    for rule in log_rules:
        for unit in _wanted(rule, units, scopes[rule.id], lines, stored):
            if unit.online:  # an offline unit's quiet is not a clear window: unknown
                out[(rule.id, unit.id)] = count_lines(s, rule, unit.id, now)
    for rule in command_rules:
        for unit in _wanted(rule, units, scopes[rule.id], dict.fromkeys(commands, 0), stored):
            out[(rule.id, unit.id)] = command_outcome(s, rule, unit.id, now)
    return out


def pseudo_unit(device_id: str) -> Unit:
    """What a rollout_failed alert is kept under: `rollout:<command>`, one per command rolled out (never a unit's
    id: a unit id has no colon), with no tags."""
    return Unit(device_id, [], True, None, None, {}, 0, 0, None)


def rollout_readings(s: Session, rules: list[Rule], now: int) -> dict[str, dict[str, Reading]]:
    """Per rollout_failed rule: for each command rolled out lately, whether its last rollout in scope aborted."""
    if not rules:
        return {}
    ended = (
        s.execute(
            sa_select(Rollout)
            .where(col(Rollout.finished_at).is_not(None), col(Rollout.state).in_(("completed", "aborted")))
            .order_by(col(Rollout.finished_at).desc())
            .limit(MAX_ROLLOUTS)
        )
        .scalars()
        .all()
    )
    ids = [r.id for r in ended]
    out: dict[str, dict[str, Reading]] = {}
    for rule in rules:
        in_scope = _rollouts_in_scope(s, rule, ids)
        latest: dict[str, Rollout] = {}
        for r in ended:
            if r.id in in_scope and (not rule.field or r.command == rule.field):
                latest.setdefault(r.command, r)
        oldest = now - int(rule.window_s * 1000) if rule.window_s else None
        readings = {}
        for command, r in latest.items():
            aborted = r.state == "aborted" and (oldest is None or (r.finished_at or 0) >= oldest)
            value = {"rollout_id": r.id, "name": r.name, "command": r.command, "state": r.state, "reason": r.reason}
            readings[f"{ROLLOUT_PREFIX}{command}"] = Reading(aborted, not aborted, value if aborted else None)
        out[rule.id] = readings
    return out


def _rollouts_in_scope(s: Session, rule: Rule, ids: Iterable[str]) -> set[str]:
    """The rollouts that touched a unit in the rule's scope (every one for a rule over all units)."""
    ids = list(ids)
    if not ids or (rule.tag is None and rule.device_id is None):
        return set(ids)
    query: Any = sa_select(col(RolloutUnit.rollout_id)).where(col(RolloutUnit.rollout_id).in_(ids))
    if rule.device_id is not None:
        query = query.where(col(RolloutUnit.device_id) == rule.device_id)
    else:
        query = query.where(col(RolloutUnit.device_id).in_(units_with_tag(rule.tag or "")))
    return set(s.execute(query.distinct()).scalars().all())
