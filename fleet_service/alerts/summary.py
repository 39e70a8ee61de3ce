"""What needs someone now: which active silence covers an open alert (decided when read, so a silence created after
the alert fired counts too, and one that ended stops counting), the fleet's firing count with its worst severity,
and the open alerts of a set of units — all in SQL, one query each, whatever the size of the fleet."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ScalarSelect, and_, case, func, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.models import OPEN, SEVERITIES, Alert, Silence
from fleet_service.devices.tags import carries_tag
from protocol.ids import now_ms


def covering_silence(now: int) -> ScalarSelect[Any]:
    """The id of an active silence whose every matcher matches the alert row of the enclosing query (or NULL).
    Resolved alerts are history: never covered."""
    tag_matches = carries_tag(col(Alert.device_id), col(Silence.tag))
    return (
        select(Silence.id)
        .where(
            col(Alert.state).in_(OPEN),
            col(Silence.starts_at) <= now,
            col(Silence.ends_at) > now,
            or_(col(Silence.rule_id).is_(None), col(Silence.rule_id) == col(Alert.rule_id)),
            or_(col(Silence.device_id).is_(None), col(Silence.device_id) == col(Alert.device_id)),
            or_(col(Silence.severity).is_(None), col(Silence.severity) == col(Alert.severity)),
            or_(col(Silence.tag).is_(None), tag_matches),
        )
        .order_by(col(Silence.ends_at).desc(), col(Silence.id))
        .limit(1)
        .correlate(Alert)
        .scalar_subquery()
    )


def _rank() -> Any:
    """critical 3, warning 2, info 1: the worst of a group is its max."""
    return case(*((col(Alert.severity) == s, i + 1) for i, s in enumerate(SEVERITIES)), else_=0)


def _severity(rank: int | None) -> str | None:
    return SEVERITIES[rank - 1] if rank else None


def alert_summary(engine: Engine, device_ids: Collection[str] = ()) -> dict[str, Any]:
    """The fleet's open count, its firing count (not acknowledged, not silenced now) with their worst severity,
    and for each of `device_ids` with open alerts: how many are open, how many firing, the worst severity."""
    now = now_ms()
    firing = and_(col(Alert.state) == "firing", covering_silence(now).is_(None))
    is_firing = case((firing, 1), else_=0)
    with Session(engine) as s:
        open_count, firing_count, worst = s.exec(
            select(func.count(), func.coalesce(func.sum(is_firing), 0), func.max(case((firing, _rank()), else_=0)))
            .select_from(Alert)
            .where(col(Alert.state).in_(OPEN))
        ).one()
        units = []
        if device_ids:
            rows = s.exec(
                select(col(Alert.device_id), func.count(), func.sum(is_firing), func.max(_rank()))
                .where(col(Alert.state).in_(OPEN), col(Alert.device_id).in_(sorted(device_ids)))
                .group_by(col(Alert.device_id))
                .order_by(col(Alert.device_id))
            ).all()
            units = [{"device_id": d, "open": n, "firing": int(f or 0), "worst": _severity(w)} for d, n, f, w in rows]
    return {"firing": int(firing_count), "firing_worst": _severity(worst), "open": open_count, "units": units}
