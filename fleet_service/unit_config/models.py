"""Desired configuration: tag defaults and each unit's own document."""

from __future__ import annotations

from typing import Any

from sqlmodel import Field, SQLModel

from fleet_service.db.columns import json_field, ms_field


class ConfigGroup(SQLModel, table=True):
    """Config defaults for every unit carrying `tag`."""

    __tablename__ = "config_group"

    tag: str = Field(primary_key=True, max_length=64)
    config: dict[str, Any] = json_field(dict)
    priority: int = 0  # merged in order of (priority, tag): a higher priority wins
    version: int = 1
    updated_at: int = ms_field()
    updated_by: str = Field(default="", max_length=120)


class DeviceConfig(SQLModel, table=True):
    """A unit's own config, merged over its groups' defaults into `Device.desired_config`."""

    __tablename__ = "device_config"

    device_id: str = Field(primary_key=True, max_length=63)
    config: dict[str, Any] = json_field(dict)
    updated_at: int = ms_field()
