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
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.commands.dispatch import Dispatcher, build, store_new
from fleet_service.commands.models import Command, command_public
from fleet_service.commands.state import PENDING, transition
from fleet_service.db.columns import iso
from fleet_service.db.core import table_of
from fleet_service.devices.models import Device
from fleet_service.errors import Conflict, NotFound
from fleet_service.ingest.persister import Outcome
from fleet_service.live.bus import EventBus
from fleet_service.rollouts.models import Rollout, RolloutUnit
from fleet_service.rollouts.plan import Plan, store_plan
from fleet_service.rollouts.progress import (
    ACTIVE,
    FAILED,
    count_states,
    decide,
    rollout_public,
    totals,
    unit_state,
)
from protocol.ids import now_ms
from protocol.payloads import cap_output

log = logging.getLogger(__name__)
UNIT_OUTPUT_BYTES = 2048  # of each unit's command output in the detail view: its end, which says why it failed


class RolloutConflict(Conflict):
    """The rollout's state does not allow this (409)."""


@dataclass
class Step:
    """What one decision changed, to announce and publish after its commit."""

    new: list[Command] = field(default_factory=list)
    canceled: list[Command] = field(default_factory=list)
    acted: bool = False
    retry: bool = False  # another replica decided first: look again


class RolloutEngine:
    def __init__(self, engine: Engine, dispatcher: Dispatcher, bus: EventBus, *, tick_s: float = 1.0) -> None:
        self._engine = engine
        self._dispatcher = dispatcher
        self._bus = bus
        self._tick_s = tick_s
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    # -- triggers --------------------------------------------------------------------------------------------

    def wake(self, rollout_id: str) -> None:
        self._dirty.add(rollout_id)
        self._wake.set()

    def on_command(self, cmd: Command) -> None:
        """Dispatcher listener: a command of a rollout changed status here."""
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
                r.reason = (
                    f"aborted: {t['failed']} of {decided} units failed, more than the abort threshold "
                    f"of {r.abort_threshold:g}"
                )
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
        units = s.exec(
            select(RolloutUnit)
            .where(
                RolloutUnit.rollout_id == r.id,
                RolloutUnit.batch == r.dispatched_batches,
                RolloutUnit.state == "pending",
            )
            .order_by(col(RolloutUnit.position))
        ).all()
        present = set(s.exec(select(Device.id).where(col(Device.id).in_([u.device_id for u in units]))).all())
        for unit in units:
            unit.updated_at = now
            if unit.device_id not in present:  # revoked since the rollout began
                unit.state = "canceled"
            else:
                cmd = build(
                    unit.device_id,
                    r.command,
                    r.args,
                    ttl_s=r.ttl_s,
                    timeout_s=r.timeout_s,
                    created_by=f"rollout {r.id}",
                    rollout_id=r.id,
                    now=now,
                )
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
        s.execute(
            update(RolloutUnit)
            .where(col(RolloutUnit.rollout_id) == r.id, col(RolloutUnit.state) == "pending")
            .values(state="canceled", updated_at=now)
        )
        waiting = s.exec(
            select(Command).where(Command.rollout_id == r.id, col(Command.status).in_(PENDING)).order_by(Command.id)
        ).all()
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
        rollout_id = await asyncio.to_thread(store_plan, self._engine, plan)
        await self.step(rollout_id, announce=True)
        view = await asyncio.to_thread(self.view, rollout_id, False)
        assert view is not None
        return view

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
                    raise NotFound(f"no rollout with id {rollout_id!r}")
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

    def view(
        self, rollout_id: str, units: bool = True, limit: int = 1000, offset: int = 0, failed_only: bool = False
    ) -> dict[str, Any] | None:
        """The rollout with its counts; with `units`, a page of its units (or of those that failed), each with the
        end of its command's output: enough to tell why it failed without one request per unit."""
        with Session(self._engine) as s:
            r = s.get(Rollout, rollout_id)
            if r is None:
                return None
            out = rollout_public(r, count_states(s, rollout_id))
            if units:
                state = unit_state().label("st")
                q = (
                    select(RolloutUnit, state, Command)
                    .select_from(RolloutUnit)
                    .outerjoin(Command, col(Command.id) == RolloutUnit.command_id)
                    .where(
                        RolloutUnit.rollout_id == rollout_id,
                        *([col(Command.status).in_(FAILED)] if failed_only else []),
                    )
                    .order_by(col(RolloutUnit.position))
                    .offset(offset)
                    .limit(limit)
                )
                out["units"] = [
                    {
                        "device_id": u.device_id,
                        "batch": u.batch,
                        "state": st,
                        "command_id": u.command_id,
                        "exit_code": cmd and cmd.exit_code,
                        "output": cmd and cap_output(cmd.output, UNIT_OUTPUT_BYTES),
                        "updated_at": iso(max(u.updated_at, cmd.updated_at if cmd else 0)),
                    }
                    for u, st, cmd in s.exec(q).all()
                ]
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
    table = table_of(Rollout)
    result = s.connection().execute(
        update(table)
        .where(table.c.id == r.id, table.c.revision == r.revision)
        .values(revision=r.revision + 1, updated_at=now)
    )
    if result.rowcount != 1:
        s.rollback()
        return False
    r.updated_at = now  # unchanged since we read it, and now locked for us until commit
    return True
