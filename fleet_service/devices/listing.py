"""Which units a filter of the unit list matches (status, tag, free text): one meaning for the list and for a
rollout aimed at "every unit matching this filter"."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import ColumnElement, and_
from sqlmodel import Session, col, select

from fleet_service.devices.models import Device
from fleet_service.devices.search import text_match
from fleet_service.devices.tags import units_with_tag
from fleet_service.errors import Invalid
from protocol.tags import is_tag

Status = Literal["online", "offline", "failing"]
MAX_Q = 100
# Failing: online, yet its latest metrics report a state "failed" (a systemd service, or a recorder state in extra);
# ingest keeps `failing` from the metrics, so this reads two columns instead of matching every row's JSON.
FAILING = and_(col(Device.online) == True, col(Device.failing) == True)  # noqa: E712


def filter_conditions(status: str | None, tag: str | None, q: str | None) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a unit-list filter; a bad tag is Invalid (an unknown status never gets here)."""
    conditions: list[ColumnElement[bool]] = []
    if status == "failing":
        conditions.append(FAILING)
    elif status:
        conditions.append(col(Device.online) == (status == "online"))
    if tag:
        if not is_tag(tag):
            raise Invalid("invalid tag")
        conditions.append(col(Device.id).in_(units_with_tag(tag)))
    if q:
        conditions.append(text_match(q))
    return conditions


def matching_ids(s: Session, status: str | None, tag: str | None, q: str | None, limit: int) -> list[str]:
    """The ids of the units matching a filter, in id order, at most `limit` of them."""
    query = select(Device.id).where(*filter_conditions(status, tag, q)).order_by(col(Device.id)).limit(limit)
    return list(s.exec(query).all())
