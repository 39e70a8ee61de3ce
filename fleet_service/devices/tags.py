"""A unit's tags: the one writer of the `unit_tag` lookup rows, the one query for the units carrying a tag (and its
correlated form, for a tag held in another row), and the fleet's tags in use with their counts (suggestions while
typing a tag).

Device.tags is the list the API shows; searching its JSON text with LIKE was neither exact (`_` is a LIKE
wildcard and tags may contain it: `site_1` matched `siteA1`) nor indexed. The `unit_tag` rows are both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, Exists, delete, exists, func, insert
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from fleet_service.devices.models import Device, UnitTag
from fleet_service.devices.search import LIKE_ESCAPE, like_literal
from protocol.tags import is_tag


def set_tags(session: Session, device: Device, tags: Iterable[str]) -> None:
    """Give `device` these tags (already checked with protocol.tags), in the caller's transaction."""
    device.tags = list(tags)
    session.add(device)
    store_tags(session, {device.id: device.tags})


def store_tags(db, tags_by_unit: Mapping[str, Iterable[str]]) -> None:
    """Replace the lookup rows of these units (`db`: a Session or a Connection; bulk enrollment uses it for
    units whose Device rows it inserts itself). A stale row left by a unit deleted outside revoke() is replaced."""
    ids = list(tags_by_unit)
    for start in range(0, len(ids), 1000):
        db.execute(delete(UnitTag).where(col(UnitTag.device_id).in_(ids[start : start + 1000])))
    # Only a tag that keeps the rule can be asked for (`fleet device add --tag` stores what it is given).
    rows = [
        {"device_id": unit, "tag": tag}
        for unit, tags in tags_by_unit.items()
        for tag in dict.fromkeys(tags)
        if is_tag(tag)
    ]
    if rows:
        db.execute(insert(UnitTag), rows)


def units_with_tag(tag: str) -> SelectOfScalar[str]:
    """The ids of the units carrying exactly `tag`, in id order: run it (`session.exec(units_with_tag(t)).all()`)
    or use it as a condition (`col(Device.id).in_(units_with_tag(t))`)."""
    return select(UnitTag.device_id).where(UnitTag.tag == tag).order_by(UnitTag.device_id)


def carries_tag(device_id: Mapped[str], tag: Mapped[str | None]) -> Exists:
    """Whether the unit in `device_id` carries exactly `tag`, both columns of the enclosing query (an alert's unit
    and a silence's tag): the lookup of units_with_tag, correlated."""
    return exists().where(col(UnitTag.device_id) == device_id, col(UnitTag.tag) == tag).correlate_except(UnitTag)


def tag_counts(engine: Engine, prefix: str = "", limit: int = 200) -> list[dict[str, Any]]:
    """Every tag in use with how many units carry it, sorted by tag (byte order, the same on every database);
    `prefix` keeps the tags that start with it, ignoring case (what an operator is typing)."""
    tag = col(UnitTag.tag)
    query = select(tag, func.count()).group_by(tag)
    if prefix:
        query = query.where(func.lower(tag).like(like_literal(prefix.lower()) + "%", escape=LIKE_ESCAPE))
    order = tag.collate("C") if engine.dialect.name == "postgresql" else tag
    with Session(engine) as s:
        rows = s.exec(query.order_by(order).limit(limit)).all()
    return [{"tag": t, "units": n} for t, n in rows]
