"""The alert list: filters an operator asks by, open alerts first, newest first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.lifecycle import alert_public
from fleet_service.alerts.models import OPEN, SEVERITIES, Alert
from fleet_service.alerts.summary import covering_silence
from fleet_service.devices.tags import units_with_tag
from protocol.ids import now_ms


def alert_page(
    engine: Engine,
    *,
    state: str | None = None,
    severity: str | None = None,
    unit: str | None = None,
    tag: str | None = None,
    rule: str | None = None,
    since: int | None = None,
    sort: str = "newest",
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """`state` "open" means firing or acknowledged; `since` keeps alerts fired at or after it (ms). Open alerts
    come first; within them `sort` "newest" is newest first, "triage" is the order someone on call works through
    them: firing before acknowledged, critical before warning before info, then newest first. Each open alert
    names the active silence that covers it now (`silenced_by`)."""
    where: list[ColumnElement[bool]] = []
    if state == "open":
        where.append(col(Alert.state).in_(OPEN))
    elif state is not None:
        where.append(col(Alert.state) == state)
    if severity is not None:
        where.append(col(Alert.severity) == severity)
    if unit is not None:
        where.append(col(Alert.device_id) == unit)
    if tag is not None:
        where.append(col(Alert.device_id).in_(units_with_tag(tag)))
    if rule is not None:
        where.append(col(Alert.rule_id) == rule)
    if since is not None:
        where.append(col(Alert.fired_at) >= since)
    order: list[Any] = [case((col(Alert.state) == "resolved", 1), else_=0)]
    if sort == "triage":
        order.append(case((col(Alert.state) == "firing", 0), else_=1))
        order.append(case(*((col(Alert.severity) == s, -i) for i, s in enumerate(SEVERITIES)), else_=1))
    with Session(engine) as s:
        total = s.exec(select(func.count()).select_from(Alert).where(*where)).one()
        rows = s.exec(
            select(Alert, covering_silence(now_ms()))
            .where(*where)
            .order_by(*order, col(Alert.fired_at).desc(), col(Alert.id).desc())
            .limit(limit)
            .offset(offset)
        ).all()
    items = [{**alert_public(a), "silenced_by": by} for a, by in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}
