"""Desired configs: a unit's own config merged over the defaults of its tags, stored, versioned, published retained.

A unit's effective config is its groups' defaults with its own config on top (unit_config/merge.py). Whenever
that result changes its `desired_version` goes up and `{"version", "config"}` is published retained to
`fleet/{id}/config/desired`. A PUT of a unit's own config always bumps the version (an explicit re-send).

Writers lock the unit rows they recompute (PostgreSQL: `SELECT ... FOR UPDATE` in id order; SQLite: the first
write takes the database lock), so a group change and a unit change racing each other both end up merged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.broker_link.base import BrokerLink, BrokerUnavailable
from fleet_service.db.columns import iso
from fleet_service.db.core import table_of
from fleet_service.devices.models import Device, device_status
from fleet_service.devices.tags import units_with_tag
from fleet_service.errors import NotFound, PreconditionFailed
from fleet_service.live.bus import EventBus
from fleet_service.unit_config.merge import effective_config, ordered_groups
from fleet_service.unit_config.models import ConfigGroup, DeviceConfig
from fleet_service.unit_config.schema import ConfigInvalid, validate_config
from protocol.ids import now_ms
from protocol.payloads import ConfigDesired, encode
from protocol.topics import Kind, topic

log = logging.getLogger(__name__)
PUBLISH_CONCURRENCY = 64


class VersionConflict(PreconditionFailed):
    """If-Match named another version than the stored one."""

    def __init__(self, what: str, current: int, expected: int) -> None:
        super().__init__(f"the {what} is at version {current}, not {expected}")
        self.current = current


@dataclass(frozen=True)
class Desired:
    device_id: str
    version: int
    config: dict[str, Any]


def _lock_devices(session: Session, device_ids: list[str]) -> None:
    if not device_ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        rows = select(Device.id).where(col(Device.id).in_(device_ids)).order_by(Device.id)
        session.exec(rows.with_for_update()).all()
    else:  # SQLite: any write takes the database lock until commit
        session.execute(
            update(Device).where(col(Device.id).in_(device_ids)).values(desired_version=Device.desired_version)
        )


def _lock_group(session: Session, tag: str, create: bool) -> ConfigGroup | None:
    """Lock the group's row for this transaction (creating an empty one first when asked, so two first PUTs of
    a tag queue up instead of colliding on the insert)."""
    pg = session.get_bind().dialect.name == "postgresql"
    if create:
        insert = postgresql.insert if pg else sqlite.insert
        session.execute(
            insert(table_of(ConfigGroup))
            .values(tag=tag, config={}, priority=0, version=0, updated_at=now_ms(), updated_by="")
            .on_conflict_do_nothing(index_elements=["tag"])
        )
    elif not pg:  # SQLite: take the database lock before reading
        session.execute(update(ConfigGroup).where(col(ConfigGroup.tag) == tag).values(version=ConfigGroup.version))
    return session.get(ConfigGroup, tag, with_for_update=True, populate_existing=True)


class DesiredConfigs:
    def __init__(self, engine: Engine, link: BrokerLink, bus: EventBus) -> None:
        self._engine = engine
        self._link = link
        self._bus = bus
        self.background: set[asyncio.Task] = set()  # re-publishes in flight (cancelled on stop)

    # -- reading ---------------------------------------------------------------------------------------------

    def view(self, device_id: str) -> dict[str, Any] | None:
        with Session(self._engine) as s:
            d = s.get(Device, device_id)
            if d is None:
                return None
            own = s.get(DeviceConfig, device_id)
            groups = ordered_groups(
                s.exec(select(ConfigGroup).where(col(ConfigGroup.tag).in_(d.tags or []))), d.tags or []
            )
        return {
            "device_id": d.id,
            "desired": d.desired_config,
            "desired_version": d.desired_version,
            "reported": d.reported_config,
            "reported_version": d.reported_version,
            "in_sync": device_status(d)["config_in_sync"],
            "status": d.config_status,
            "error": d.config_error,
            "own": own.config if own else {},
            "groups": [{"tag": g.tag, "priority": g.priority, "version": g.version} for g in groups],
        }

    def group(self, tag: str) -> dict[str, Any] | None:
        with Session(self._engine) as s:
            g = s.get(ConfigGroup, tag)
            return None if g is None else group_public(g, len(s.exec(units_with_tag(tag)).all()))

    def groups(self) -> list[dict[str, Any]]:
        with Session(self._engine) as s:
            rows = s.exec(select(ConfigGroup).order_by(col(ConfigGroup.priority), col(ConfigGroup.tag))).all()
            return [group_public(g, len(s.exec(units_with_tag(g.tag)).all())) for g in rows]

    # -- writing ---------------------------------------------------------------------------------------------

    async def put_device(self, device_id: str, config: Any, if_match: int | None = None) -> Desired:
        """Store a unit's own config and publish its new effective config; raises NotFound, VersionConflict,
        ConfigInvalid (nothing stored, nothing published)."""
        config = validate_config(config)

        def store() -> Desired:
            with Session(self._engine, expire_on_commit=False) as s:
                _lock_devices(s, [device_id])
                d = s.get(Device, device_id, populate_existing=True)
                if d is None:
                    raise NotFound(f"no unit with id {device_id!r}")
                if if_match is not None and if_match != d.desired_version:
                    raise VersionConflict("desired config", d.desired_version, if_match)
                own = s.get(DeviceConfig, device_id) or DeviceConfig(device_id=device_id)
                own.config = config
                own.updated_at = now_ms()
                s.add(own)
                groups = s.exec(select(ConfigGroup).where(col(ConfigGroup.tag).in_(d.tags or []))).all()
                d.desired_config = effective_config(groups, d.tags or [], config)
                d.desired_version += 1
                s.add(d)
                s.commit()
                return Desired(d.id, d.desired_version, d.desired_config)

        desired = await asyncio.to_thread(store)
        await self.publish([desired])
        return desired

    async def put_group(
        self, tag: str, config: Any, *, priority: int | None = None, if_match: int | None = None, updated_by: str = ""
    ) -> tuple[dict[str, Any], int]:
        """Store a tag's defaults and re-publish every affected unit; returns the group and how many changed."""
        config = validate_config(config, "the group config")

        def store() -> tuple[dict[str, Any], list[Desired]]:
            with Session(self._engine, expire_on_commit=False) as s:
                group = _lock_group(s, tag, create=True)
                assert group is not None
                current = group.version  # 0: created just now
                if if_match is not None and if_match != current:
                    raise VersionConflict("group config", current, if_match)
                group.config = config
                group.priority = group.priority if priority is None else priority
                group.version = current + 1
                group.updated_at = now_ms()
                group.updated_by = updated_by[:120]
                s.add(group)
                s.flush()
                ids = list(s.exec(units_with_tag(tag)).all())
                changed = self._recompute(s, ids)
                s.commit()
                return group_public(group, len(ids)), changed

        view, changed = await asyncio.to_thread(store)
        await self.publish(changed)
        self._bus.publish(
            "config_group", {"tag": tag, "version": view["version"], "units": view["units"], "changed": len(changed)}
        )
        return view, len(changed)

    async def delete_group(self, tag: str) -> int | None:
        """Remove a tag's defaults; re-publish the affected units. None when there was no such group."""

        def store() -> list[Desired] | None:
            with Session(self._engine, expire_on_commit=False) as s:
                group = _lock_group(s, tag, create=False)
                if group is None:
                    return None
                s.delete(group)
                s.flush()
                changed = self._recompute(s, list(s.exec(units_with_tag(tag)).all()))
                s.commit()
                return changed

        changed = await asyncio.to_thread(store)
        if changed is None:
            return None
        await self.publish(changed)
        self._bus.publish("config_group", {"tag": tag, "version": None, "deleted": True, "changed": len(changed)})
        return len(changed)

    async def refresh(self, device_ids: list[str]) -> int:
        """Recompute units whose tags changed (or that were just enrolled); publish those whose config moved."""

        def store() -> list[Desired]:
            with Session(self._engine, expire_on_commit=False) as s:
                changed = self._recompute(s, sorted(device_ids))
                s.commit()
                return changed

        changed = await asyncio.to_thread(store)
        await self.publish(changed)
        return len(changed)

    def _stale(self, device_id: str) -> bool:
        """Read-only: would a recompute change this unit's desired config?"""
        with Session(self._engine) as s:
            d = s.get(Device, device_id)
            if d is None:
                return False
            own = s.get(DeviceConfig, device_id)
            groups = s.exec(select(ConfigGroup).where(col(ConfigGroup.tag).in_(d.tags or []))).all()
            try:
                return effective_config(groups, d.tags or [], own.config if own else {}) != d.desired_config
            except ConfigInvalid:
                return False

    async def on_birth(self, device_id: str) -> None:
        """A unit came online: bring its desired config up to date (a unit enrolled with tags by the CLI never
        went through the API), then re-publish what it has not reported yet."""
        if await asyncio.to_thread(self._stale, device_id):
            await self.refresh([device_id])
        await self.publish_out_of_sync(device_id)

    def _recompute(self, s: Session, device_ids: list[str]) -> list[Desired]:
        if not device_ids:
            return []
        _lock_devices(s, device_ids)
        groups = list(s.exec(select(ConfigGroup)).all())
        changed: list[Desired] = []
        for start in range(0, len(device_ids), 500):
            chunk = device_ids[start : start + 500]
            devices = s.exec(
                select(Device).where(col(Device.id).in_(chunk)).execution_options(populate_existing=True)
            ).all()
            owns = {
                o.device_id: o.config
                for o in s.exec(select(DeviceConfig).where(col(DeviceConfig.device_id).in_(chunk)))
            }
            for d in devices:
                merged = effective_config(groups, d.tags or [], owns.get(d.id, {}))
                if merged == d.desired_config:
                    continue
                d.desired_config = merged
                d.desired_version += 1
                s.add(d)
                changed.append(Desired(d.id, d.desired_version, merged))
        return changed

    def forget(self, device_id: str) -> None:
        """A revoked unit's own config goes with it (a re-enrolled id starts from its groups alone)."""
        with Session(self._engine) as s:
            s.exec(delete(DeviceConfig).where(col(DeviceConfig.device_id) == device_id))
            s.commit()

    # -- publishing ------------------------------------------------------------------------------------------

    async def publish(self, items: list[Desired]) -> int:
        """Publish retained; afterwards re-read the versions, and publish again any unit a racing writer moved
        on, so the retained message always ends at the newest version. Returns how many were not published."""
        failed = 0
        while items:
            failed += await self._publish_all(items)
            newest = await asyncio.to_thread(self._newer_than, {d.device_id: d.version for d in items})
            items = newest
        return failed

    async def _publish_all(self, items: list[Desired]) -> int:
        limit = asyncio.Semaphore(PUBLISH_CONCURRENCY)
        failures = 0

        async def one(d: Desired) -> None:
            nonlocal failures
            message = encode(ConfigDesired(version=d.version, config=d.config))
            async with limit:
                try:
                    await self._link.publish(topic(d.device_id, Kind.CONFIG_DESIRED), message, qos=1, retain=True)
                except BrokerUnavailable as exc:
                    # Stored: published again when the broker link returns or the unit is next born.
                    failures += 1
                    log.info("desired config %s v%d not published yet: %s", d.device_id, d.version, exc)
            self._announce(d)

        await asyncio.gather(*(one(d) for d in items))
        return failures

    def _announce(self, d: Desired) -> None:
        self._bus.publish(
            "config", {"device_id": d.device_id, "desired_version": d.version, "change": "desired"}, d.device_id
        )

    def _newer_than(self, versions: dict[str, int]) -> list[Desired]:
        with Session(self._engine) as s:
            rows = s.exec(select(Device).where(col(Device.id).in_(list(versions)))).all()
            return [
                Desired(d.id, d.desired_version, d.desired_config) for d in rows if d.desired_version > versions[d.id]
            ]

    def _out_of_sync(self, device_id: str | None = None) -> list[Desired]:
        with Session(self._engine) as s:
            q = select(Device).where(Device.desired_version > 0, Device.desired_version != Device.reported_version)
            if device_id is not None:
                q = q.where(Device.id == device_id)
            return [Desired(d.id, d.desired_version, d.desired_config) for d in s.exec(q.limit(10_000)).all()]

    async def publish_out_of_sync(self, device_id: str | None = None) -> int:
        """Publish desired configs a unit has not reported yet: one that could not be published when it was
        stored (broker away), or lost by a broker without persistence. On link connect and on a unit's birth."""
        pending = await asyncio.to_thread(self._out_of_sync, device_id)
        await self._publish_all(pending)
        return len(pending)

    def soon(self, coro) -> None:
        """Run in the background (ingest listeners must not wait on the broker)."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def follow_devices(self) -> None:
        """Recompute a unit when it is enrolled or its tags change; forget a revoked unit's own config.

        Listens to this replica's own `device` events (the replica that served the change acts on it)."""
        last: int | None = None
        while True:
            async for event in self._bus.subscribe(last):
                last = event.id
                if event.type != "device" or event.origin is not None or not event.device_id:
                    continue
                action = event.data.get("action")
                try:
                    if action in ("enrolled", "updated"):
                        await self.refresh([event.device_id])
                    elif action == "revoked":
                        await asyncio.to_thread(self.forget, event.device_id)
                except Exception:
                    log.exception("config follow-up of %s %s failed", event.device_id, action)
            await asyncio.sleep(0.1)  # dropped as too slow: resume from the last event seen


def group_public(g: ConfigGroup, units: int) -> dict[str, Any]:
    return {
        "tag": g.tag,
        "config": g.config,
        "priority": g.priority,
        "version": g.version,
        "updated_at": iso(g.updated_at),
        "updated_by": g.updated_by,
        "units": units,
    }


__all__ = ["Desired", "DesiredConfigs", "VersionConflict", "group_public"]
