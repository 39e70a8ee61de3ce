"""A new rollout as the API validated it (`Plan`), and storing it: the rollout row and one `rollout_unit` row per
unit, in the order given, numbered into batches. The runner (rollouts/runner.py) takes it from there."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_service.db.core import table_of
from fleet_service.rollouts.models import Rollout, RolloutUnit
from protocol.ids import new_id, now_ms

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 3600  # a unit that stays offline this long counts as failed, so a rollout never hangs
INSERT_CHUNK = 1000


@dataclass
class Plan:
    """A new rollout, validated by the API."""

    command: str
    args: dict[str, Any]
    device_ids: list[str]
    target: dict[str, Any]
    batch_size: int
    pause_s: float
    abort_threshold: float
    ttl_s: int
    timeout_s: int | None
    name: str = ""
    created_by: str = ""


def devices_in_order(ids: Iterable[str]) -> list[str]:
    """Unique ids in the order given (an operator lists canaries first)."""
    return list(dict.fromkeys(ids))


def store_plan(engine: Engine, plan: Plan) -> str:
    """Store the rollout, running and with no batch sent yet; its id."""
    now = now_ms()
    r = Rollout(
        id=new_id(),
        name=plan.name,
        command=plan.command,
        args=plan.args,
        ttl_s=plan.ttl_s,
        timeout_s=plan.timeout_s,
        target=plan.target,
        batch_size=plan.batch_size,
        batches=math.ceil(len(plan.device_ids) / plan.batch_size),
        pause_s=plan.pause_s,
        abort_threshold=plan.abort_threshold,
        created_at=now,
        updated_at=now,
        created_by=plan.created_by[:120],
    )
    rows = [
        {
            "rollout_id": r.id,
            "device_id": d,
            "position": i,
            "batch": i // plan.batch_size,
            "state": "pending",
            "command_id": None,
            "updated_at": now,
        }
        for i, d in enumerate(plan.device_ids)
    ]
    with Session(engine, expire_on_commit=False) as s:
        s.add(r)
        s.flush()
        for start in range(0, len(rows), INSERT_CHUNK):
            s.execute(table_of(RolloutUnit).insert(), rows[start : start + INSERT_CHUNK])
        s.commit()
    log.info("rollout %s created: %s to %d units in batches of %d", r.id, plan.command, len(rows), plan.batch_size)
    return r.id
