"""A unit's effective config: the defaults of every group (tag) it carries, deep-merged in order of
(priority, tag) so a higher priority wins and ties go by tag name, then the unit's own config on top."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleet_service.unit_config.models import ConfigGroup
from fleet_service.unit_config.schema import validate_config


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` wins; objects present on both sides are merged key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def ordered_groups(groups: Iterable[ConfigGroup], tags: Iterable[str]) -> list[ConfigGroup]:
    wanted = set(tags)
    return sorted((g for g in groups if g.tag in wanted), key=lambda g: (g.priority, g.tag))


def effective_config(groups: Iterable[ConfigGroup], tags: Iterable[str], own: dict[str, Any]) -> dict[str, Any]:
    """Merge; raises ConfigInvalid when the result is refused (too large, or a group stored before a rule)."""
    merged: dict[str, Any] = {}
    for group in ordered_groups(groups, tags):
        merged = deep_merge(merged, group.config)
    return validate_config(deep_merge(merged, own), "the merged config (group defaults plus the unit's own)")
