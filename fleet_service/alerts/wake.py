"""Which live events are worth an evaluation soon. Most metrics samples come from healthy units with nothing
pending: evaluating those changes nothing, so the evaluator only wakes for a unit whose sample breaches some
rule, or that already has a condition under way (pending, firing, clearing), or whose presence or config
changed, or that logged a line some log rule's level takes, or ended a command a failure rule watches. The
timer's full evaluation still reads every unit, so this decides how soon, never whether."""

from __future__ import annotations

from typing import Any

from fleet_service.alerts.evaluate import Rule, Unit, read
from fleet_service.alerts.sources import ENDED
from fleet_service.devices.models import LEVEL_NUMBERS

ALWAYS = frozenset({"presence", "config"})  # rare, and they move offline and config-sync conditions
SAMPLE_KINDS = frozenset({"metric", "service", "extra"})  # the kinds a metrics sample alone can breach


def worth_waking(
    event_type: str, device_id: str, payload: dict[str, Any], rules: list[Rule], watching: set[str]
) -> bool:
    if event_type in ALWAYS or device_id in watching:
        return True
    if event_type == "log":  # a line at or above some log rule's level (the evaluation matches the pattern)
        level = LEVEL_NUMBERS.get(str(payload.get("level")), 0)
        return any(r.kind == "log" and LEVEL_NUMBERS.get(r.level, 0) <= level for r in rules)
    if event_type == "command":
        return payload.get("status") in ENDED and any(r.kind == "command_failed" for r in rules)
    if event_type != "metrics":
        return False
    # Scope is left out: a breach under any rule wakes the unit, and the evaluation applies the scope.
    unit = Unit(device_id, [], True, None, None, payload, 0, 0, None)
    for rule in rules:
        if rule.kind in SAMPLE_KINDS:
            reading = read(rule, unit)
            if reading is not None and reading.breach:
                return True
    return False
