"""Units: their identity and latest state (fleet_service/devices/models.py device_public and device_status)."""

from __future__ import annotations

from typing import Any

from fleet_service.api.schemas.common import Items, Public

__all__ = [
    "DeviceEnrolled",
    "DeviceListItem",
    "DevicePage",
    "DevicePublic",
    "DeviceSecret",
    "DeviceStatus",
    "FleetSummary",
    "TagCount",
    "TagList",
]


class DeviceStatus(Public):
    id: str
    online: bool
    status: str  # online | offline
    last_seen: str | None
    online_changed_at: str | None
    offline_reason: str | None
    software_version: str
    agent_version: str
    boot_id: str
    hostname: str
    ips: list[str]
    uptime_s: int | float | None
    metrics: dict[str, Any]  # the latest metrics message as the unit sent it
    logs_dropped: int
    ingest_throttled: int
    config_in_sync: bool


class DevicePublic(Public):
    id: str
    name: str
    tags: list[str]
    created_at: str
    online: bool
    status: str
    last_seen: str | None
    online_changed_at: str | None
    offline_reason: str | None
    software_version: str
    agent_version: str
    boot_id: str
    hostname: str
    ips: list[str]
    uptime_s: int | float | None
    metrics: dict[str, Any]
    logs_dropped: int
    ingest_throttled: int
    config_in_sync: bool


class DeviceListItem(DevicePublic):
    """A list item: `metrics` without `services` and `extra`, which services failed instead."""

    failing: bool
    failed_services: list[str]


class DeviceEnrolled(DevicePublic):
    secret: str  # shown this once


class DeviceSecret(Public):
    id: str
    secret: str


class FleetSummary(Public):
    units: int
    online: int
    offline: int
    failing: int


class DevicePage(Public):
    items: list[DeviceListItem]
    total: int
    limit: int
    offset: int
    summary: FleetSummary


class TagCount(Public):
    tag: str
    units: int  # how many units carry it


class TagList(Items[TagCount]):
    """Every tag in use (or those starting with a prefix), sorted by tag."""
