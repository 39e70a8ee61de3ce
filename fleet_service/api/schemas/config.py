"""Desired/reported configuration of a unit and the per-tag defaults (fleet_service/unit_config/desired.py)."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Public

__all__ = [
    "ConfigGroupDeleted",
    "ConfigGroupList",
    "ConfigGroupPublic",
    "ConfigGroupRef",
    "ConfigGroupWritten",
    "ConfigSchema",
    "ConfigSetting",
    "DeviceConfigView",
]


class ConfigGroupRef(Public):
    tag: str
    priority: int
    version: int


class DeviceConfigView(Public):
    device_id: str
    desired: dict[str, Any]  # the effective config: the unit's own over its tags' defaults
    desired_version: int
    reported: dict[str, Any]
    reported_version: int
    in_sync: bool
    status: str | None
    error: str | None
    own: dict[str, Any]
    groups: list[ConfigGroupRef]


class ConfigSetting(Public):
    type: str
    help: str
    minimum: int | float | None = None  # the keys below only where the setting has them
    maximum: int | float | None = None
    choices: list[str] | None = None
    items: str | None = None  # what an array holds: "string" or "integer"


class ConfigSchema(Public):
    known: dict[str, ConfigSetting]
    unknown_keys: str


class ConfigGroupPublic(Public):
    tag: str
    config: dict[str, Any]
    priority: int
    version: int
    updated_at: str
    updated_by: str
    units: int


class ConfigGroupWritten(ConfigGroupPublic):
    changed_units: int


class ConfigGroupList(Public):
    items: list[ConfigGroupPublic]
    total: int


class ConfigGroupDeleted(Public):
    tag: str
    deleted: bool
    changed_units: int
