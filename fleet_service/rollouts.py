"""Rollouts: one command to many units, batch by batch, stopped when too many fail.

All state is in the database (`rollout`, `rollout_unit`; a unit's progress is the state of the command it was
sent), so a restarted service, or any other replica, continues where it was. Every decision (dispatch a batch,
start the pause before one, abort, complete, pause/resume/cancel) is a compare-and-set on `rollout.revision`:
when two replicas decide at once, one wins and the other re-reads.

Abort rule: failed / decided > abort_threshold, where decided = succeeded + failed. A command that ends failed,
rejected, expired or timed_out counts as failed; canceled counts as neither. The rule is applied as soon as its
outcome is certain (failed / (decided + in flight) is already above the threshold), so a batch whose failures
decide it does not wait for its slowest unit. Units not yet sent anything are then `canceled`, and so are the
commands still waiting for their unit; commands a unit already took run to their end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, literal, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.commands import Dispatcher, build, store_new
from fleet_service.commands_state import PENDING, transition
from fleet_service.events import EventBus
from fleet_service.ingest.persister import Outcome
from fleet_service.models import Command, Device, Rollout, RolloutUnit, command_public, iso
from protocol.ids import new_id, now_ms

log = logging.getLogger(__name__)
ACTIVE = ("running", "paused")
FAILED = ("failed", "rejected", "expired", "timed_out")
IN_FLIGHT = ("queued", "sent", "accepted", "running")
DEFAULT_TTL_S = 3600  # a unit that stays offline this long counts as failed, so a rollout never hangs
INSERT_CHUNK = 1000


class RolloutConflict(Exception):
    """The rollout's state does not allow this (409)."""


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


@dataclass
class Step:
    """What one decision changed, to announce and publish after its commit."""

    new: list[Command] = field(default_factory=list)
    canceled: list[Command] = field(default_factory=list)
    acted: bool = False
    retry: bool = False  # another replica decided first: look again


def unit_state():
    """A unit's state: its command's status, or its own (`pending`, `canceled`); a deleted command = canceled."""
    return case((col(Command.id).is_not(None), Command.status),
                (RolloutUnit.state == "dispatched", literal("canceled")), else_=RolloutUnit.state)


def count_states(s: Session, rollout_id: str) -> dict[str, int]:
    state = unit_state().label("st")
    q = (select(state, func.count()).select_from(RolloutUnit)
         .outerjoin(Command, col(Command.id) == RolloutUnit.command_id)
         .where(RolloutUnit.rollout_id == rollout_id).group_by("st"))
    return {st: n for st, n in s.exec(q).all()}


def totals(counts: dict[str, int]) -> dict[str, Any]:
    return {"total": sum(counts.values()), "pending": counts.get("pending", 0),
            "in_progress": sum(counts.get(s, 0) for s in IN_FLIGHT), "succeeded": counts.get("succeeded", 0),
            "failed": sum(counts.get(s, 0) for s in FAILED), "canceled": counts.get("canceled", 0),
            "by_state": dict(sorted(counts.items()))}


def decide(r: Rollout, counts: dict[str, int], now: int) -> str | None:
    """The next decision for an active rollout: abort, complete, wait (start the pause), dispatch, or None."""
    t = totals(counts)
    failed, in_flight, pending = t["failed"], t["in_progress"], t["pending"]
    decided = t["succeeded"] + failed
    if failed and failed > r.abort_threshold * (decided + in_flight):
        return "abort"
    if in_flight == 0 and pending == 0:
        return "complete"
    if r.state != "running" or in_flight or not pending:
        return None
    if r.next_batch_at is None:
        return "wait" if r.pause_s > 0 and r.dispatched_batches > 0 else "dispatch"
    return "dispatch" if now >= r.next_batch_at else None


def target_public(target: dict[str, Any], shown: int = 20) -> dict[str, Any]:
    """A long id list is cut short (every unit is in the detail view's `units`): events stay small."""
    ids = target.get("device_ids")
    if isinstance(ids, list) and len(ids) > shown:
        return {**target, "device_ids": ids[:shown], "more": len(ids) - shown}
    return target


def rollout_public(r: Rollout, counts: dict[str, int]) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "command": r.command, "args": r.args, "target": target_public(r.target),
            "state": r.state, "reason": r.reason, "batch_size": r.batch_size, "batches": r.batches,
            "batch": r.dispatched_batches, "pause_s": r.pause_s, "abort_threshold": r.abort_threshold,
            "ttl_s": r.ttl_s, "timeout_s": r.timeout_s, "next_batch_at": iso(r.next_batch_at),
            "created_at": iso(r.created_at), "updated_at": iso(r.updated_at), "finished_at": iso(r.finished_at),
            "created_by": r.created_by, "totals": totals(counts)}


class RolloutEngine:
    def __init__(self, engine: Engine, dispatcher: Dispatcher, bus: EventBus, *, tick_s: float = 1.0) -> None:
        self._engine = engine
        self._dispatcher = dispatcher
        self._bus = bus
        self._tick_s = tick_s
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        dispatcher.listeners.append(self._on_command)

    # -- triggers --------------------------------------------------------------------------------------------

    def wake(self, rollout_id: str) -> None:
        self._dirty.add(rollout_id)
        self._wake.set()

    def _on_command(self, cmd: Command) -> None:
        if cmd.rollout_id:
            self.wake(cmd.rollout_id)

    def on_outcome(self, outcome: Outcome) -> None:
        """Ingest listener: a unit reported on a command of a rollout."""
        if outcome.type == "command" and outcome.data.get("rollout_id"):
            self.wake(outcome.data["rollout_id"])

    async def run(self) -> None:
        """Step every active rollout each tick (and at once after a start: resume), and woken ones right away."""
        last_full = 0.0
        while True:
            full = time.monotonic() - last_full >= self._tick_s
            dirty, self._dirty = self._dirty, set()
            try:
                ids = set(dirty)
                if full:
                    last_full = time.monotonic()
                    ids |= set(await asyncio.to_thread(self._active_ids))
            except Exception:
                log.exception("listing active rollouts failed")
                ids = set(dirty)
            for rollout_id in sorted(ids):
                try:
                    await self.step(rollout_id, announce=rollout_id in dirty)
                except Exception:
                    log.exception("rollout %s: step failed", rollout_id)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._tick_s)
            except TimeoutError:
                pass
            self._wake.clear()

    def _active_ids(self) -> list[str]:
        with Session(self._engine) as s:
            return list(s.exec(select(Rollout.id).where(col(Rollout.state).in_(ACTIVE))).all())

    # -- the decisions ---------------------------------------------------------------------------------------

    async def step(self, rollout_id: str, announce: bool = False) -> None:
        """Take every decision that is due now; announce progress when something changed."""
        for _ in range(8):  # wait -> dispatch, dispatch -> complete ...: a few in a row at most
            step = await asyncio.to_thread(self._decide_and_act, rollout_id)
            if step is None:
                break
            if step.retry:
                self.wake(rollout_id)
            await self._after(step)
            announce = announce or step.acted
            if not step.acted:
                break
        if announce:
            view = await asyncio.to_thread(self.view, rollout_id, False)
            if view is not None:
                self._bus.publish("rollout", view)

    def _decide_and_act(self, rollout_id: str) -> Step | None:
        now = now_ms()
        with Session(self._engine, expire_on_commit=False) as s:
            r = s.get(Rollout, rollout_id)
            if r is None or r.state not in ACTIVE:
                return None
            counts = count_states(s, rollout_id)
            action = decide(r, counts, now)
            if action is None:
                return Step()
            if not _claim(s, r, now):
                return Step(retry=True)
            step = Step(acted=True)
            t = totals(counts)
            if action == "abort":
                decided = t["succeeded"] + t["failed"] + t["in_progress"]
                r.reason = (f"aborted: {t['failed']} of {decided} units failed, more than the abort threshold "
                            f"of {r.abort_threshold:g}")
                self._finish(s, r, "aborted", now, step)
            elif action == "complete":
                r.reason = f"{t['succeeded']} succeeded, {t['failed']} failed, {t['canceled']} canceled"
                self._finish(s, r, "completed", now, step)
            elif action == "wait":
                r.next_batch_at = now + int(r.pause_s * 1000)
            else:
                self._dispatch(s, r, now, step)
            s.add(r)
            s.commit()
            log.info("rollout %s: %s (batch %d/%d)", r.id, action, r.dispatched_batches, r.batches)
            return step

    def _dispatch(self, s: Session, r: Rollout, now: int, step: Step) -> None:
        units = s.exec(select(RolloutUnit).where(RolloutUnit.rollout_id == r.id,
                                                 RolloutUnit.batch == r.dispatched_batches,
                                                 RolloutUnit.state == "pending")
                       .order_by(RolloutUnit.position)).all()
        present = set(s.exec(select(Device.id).where(col(Device.id).in_([u.device_id for u in units]))).all())
        for unit in units:
            unit.updated_at = now
            if unit.device_id not in present:  # revoked since the rollout began
                unit.state = "canceled"
            else:
                cmd = build(unit.device_id, r.command, r.args, ttl_s=r.ttl_s, timeout_s=r.timeout_s,
                            created_by=f"rollout {r.id}", rollout_id=r.id, now=now)
                store_new(s, cmd)
                unit.state = "dispatched"
                unit.command_id = cmd.id
                step.new.append(cmd)
            s.add(unit)
        r.dispatched_batches += 1
        r.next_batch_at = None

    def _finish(self, s: Session, r: Rollout, state: str, now: int, step: Step) -> None:
        """End the rollout: units never sent anything and commands still waiting for their unit are canceled."""
        r.state = state
        r.finished_at = now
        r.next_batch_at = None
        s.execute(update(RolloutUnit).where(col(RolloutUnit.rollout_id) == r.id, col(RolloutUnit.state) == "pending")
                  .values(state="canceled", updated_at=now))
        waiting = s.exec(select(Command).where(Command.rollout_id == r.id, col(Command.status).in_(PENDING))
                         .order_by(Command.id)).all()
        for cmd in waiting:
            if transition(s, cmd, "canceled", now):
                cmd.output = f"canceled: rollout {r.id} {state}"
                s.add(cmd)
                step.canceled.append(cmd)

    async def _after(self, step: Step) -> None:
        for cmd in step.canceled:
            self._bus.publish("command", command_public(cmd), cmd.device_id)
        for cmd in step.new:
            self._bus.publish("command", command_public(cmd), cmd.device_id)
        if step.new:
            await self._dispatcher.send_many(step.new)

    # -- operator actions ------------------------------------------------------------------------------------

    async def create(self, plan: Plan) -> dict[str, Any]:
        rollout_id = await asyncio.to_thread(self._store, plan)
        await self.step(rollout_id, announce=True)
        view = await asyncio.to_thread(self.view, rollout_id, False)
        assert view is not None
        return view

    def _store(self, plan: Plan) -> str:
        now = now_ms()
        r = Rollout(id=new_id(), name=plan.name, command=plan.command, args=plan.args, ttl_s=plan.ttl_s,
                    timeout_s=plan.timeout_s, target=plan.target, batch_size=plan.batch_size,
                    batches=math.ceil(len(plan.device_ids) / plan.batch_size), pause_s=plan.pause_s,
                    abort_threshold=plan.abort_threshold, created_at=now, updated_at=now,
                    created_by=plan.created_by[:120])
        rows = [{"rollout_id": r.id, "device_id": d, "position": i, "batch": i // plan.batch_size,
                 "state": "pending", "command_id": None, "updated_at": now} for i, d in enumerate(plan.device_ids)]
        with Session(self._engine, expire_on_commit=False) as s:
            s.add(r)
            s.flush()
            for start in range(0, len(rows), INSERT_CHUNK):
                s.execute(RolloutUnit.__table__.insert(), rows[start : start + INSERT_CHUNK])
            s.commit()
        log.info("rollout %s created: %s to %d units in batches of %d", r.id, plan.command, len(rows),
                 plan.batch_size)
        return r.id

    async def pause(self, rollout_id: str) -> dict[str, Any]:
        return await self._operate(rollout_id, "pause")

    async def resume(self, rollout_id: str) -> dict[str, Any]:
        return await self._operate(rollout_id, "resume")

    async def cancel(self, rollout_id: str, who: str = "") -> dict[str, Any]:
        return await self._operate(rollout_id, "cancel", who)

    async def _operate(self, rollout_id: str, op: str, who: str = "") -> dict[str, Any]:
        step = await asyncio.to_thread(self._operate_sync, rollout_id, op, who)
        await self._after(step)
        await self.step(rollout_id, announce=True)
        view = await asyncio.to_thread(self.view, rollout_id, False)
        assert view is not None
        return view

    def _operate_sync(self, rollout_id: str, op: str, who: str) -> Step:
        allowed = {"pause": ("running",), "resume": ("paused",), "cancel": ACTIVE}[op]
        for _ in range(20):
            now = now_ms()
            with Session(self._engine, expire_on_commit=False) as s:
                r = s.get(Rollout, rollout_id)
                if r is None:
                    raise LookupError(rollout_id)
                if r.state not in allowed:
                    raise RolloutConflict(f"the rollout is {r.state}; {op} needs it {' or '.join(allowed)}")
                if not _claim(s, r, now):
                    continue
                step = Step(acted=True)
                if op == "pause":
                    r.state = "paused"
                elif op == "resume":
                    r.state = "running"
                else:
                    r.reason = f"canceled by {who}" if who else "canceled"
                    self._finish(s, r, "canceled", now, step)
                s.add(r)
                s.commit()
                log.info("rollout %s: %s", rollout_id, op)
                return step
        raise RolloutConflict("the rollout kept changing; retry")

    # -- reading ---------------------------------------------------------------------------------------------

    def view(self, rollout_id: str, units: bool = True, limit: int = 1000, offset: int = 0) -> dict[str, Any] | None:
        with Session(self._engine) as s:
            r = s.get(Rollout, rollout_id)
            if r is None:
                return None
            out = rollout_public(r, count_states(s, rollout_id))
            if units:
                state = unit_state().label("st")
                q = (select(RolloutUnit, state, Command.exit_code, Command.updated_at).select_from(RolloutUnit)
                     .outerjoin(Command, col(Command.id) == RolloutUnit.command_id)
                     .where(RolloutUnit.rollout_id == rollout_id).order_by(RolloutUnit.position)
                     .offset(offset).limit(limit))
                out["units"] = [{"device_id": u.device_id, "batch": u.batch, "state": st, "command_id": u.command_id,
                                 "exit_code": exit_code, "updated_at": iso(max(u.updated_at, changed or 0))}
                                for u, st, exit_code, changed in s.exec(q).all()]
        return out

    def page(self, state: str | None, limit: int, offset: int) -> dict[str, Any]:
        with Session(self._engine) as s:
            q = select(Rollout)
            if state:
                q = q.where(Rollout.state == state)
            total = s.exec(select(func.count()).select_from(q.subquery())).one()
            rows = s.exec(q.order_by(col(Rollout.created_at).desc()).offset(offset).limit(limit)).all()
            items = [rollout_public(r, count_states(s, r.id)) for r in rows]
        return {"items": items, "total": total, "limit": limit, "offset": offset}


def _claim(s: Session, r: Rollout, now: int) -> bool:
    """Compare-and-set on the revision read with `r`; on success `r` is ours to change until commit."""
    table = Rollout.__table__
    result = s.connection().execute(update(table).where(table.c.id == r.id, table.c.revision == r.revision)
                                    .values(revision=r.revision + 1, updated_at=now))
    if result.rowcount != 1:
        s.rollback()
        return False
    r.updated_at = now  # unchanged since we read it, and now locked for us until commit
    return True


def devices_in_order(ids: Iterable[str]) -> list[str]:
    """Unique ids in the order given (an operator lists canaries first)."""
    return list(dict.fromkeys(ids))
