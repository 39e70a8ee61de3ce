"""Silences in Alertmanager's sense: matchers (rule, unit, tag, severity) and a time window. An alert that fires
while a silence matches it is still recorded, marked silenced, so it can be found but notifies nobody."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_service.alerts.models import Silence
from fleet_service.db.columns import iso
from fleet_service.errors import NotFound
from protocol.ids import is_device_id, new_id, now_ms
from protocol.tags import is_tag

MAX_SILENCE_S = 366 * 86_400


class SilenceSpec(BaseModel):
    """At least one matcher; the window is `starts_at` (default now) to `ends_at`, or `duration_s` from start."""

    model_config = ConfigDict(extra="forbid")
    rule_id: str | None = Field(default=None, max_length=32)
    device_id: str | None = None
    tag: str | None = None
    severity: Literal["info", "warning", "critical"] | None = None
    starts_at: int | None = Field(default=None, ge=0, description="ms since the epoch; default now")
    ends_at: int | None = Field(default=None, ge=0, description="ms since the epoch ...")
    duration_s: float | None = Field(default=None, gt=0, le=MAX_SILENCE_S, description="... or this long")
    comment: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _consistent(self) -> SilenceSpec:
        if all(getattr(self, n) is None for n in ("rule_id", "device_id", "tag", "severity")):
            raise ValueError("a silence needs at least one matcher: rule_id, device_id, tag or severity")
        if self.tag is not None and not is_tag(self.tag):
            raise ValueError(f"invalid tag {self.tag!r}")
        if self.device_id is not None and not is_device_id(self.device_id):
            raise ValueError(f"invalid device id {self.device_id!r}")
        if (self.ends_at is None) == (self.duration_s is None):
            raise ValueError("give ends_at or duration_s")
        start = self.starts_at if self.starts_at is not None else now_ms()
        end = self.ends_at if self.ends_at is not None else start + int((self.duration_s or 0) * 1000)
        if end <= start or end - start > MAX_SILENCE_S * 1000:
            raise ValueError("a silence must end after it starts, within a year")
        return self

    def window(self) -> tuple[int, int]:
        start = self.starts_at if self.starts_at is not None else now_ms()
        return start, self.ends_at if self.ends_at is not None else start + int((self.duration_s or 0) * 1000)


def silence_public(x: Silence, now: int | None = None) -> dict[str, Any]:
    now = now_ms() if now is None else now
    return {
        "id": x.id,
        "rule_id": x.rule_id,
        "device_id": x.device_id,
        "tag": x.tag,
        "severity": x.severity,
        "starts_at": iso(x.starts_at),
        "ends_at": iso(x.ends_at),
        "active": x.starts_at <= now < x.ends_at,
        "comment": x.comment,
        "created_by": x.created_by,
        "created_at": iso(x.created_at),
    }


def create_silence(engine: Engine, spec: SilenceSpec, who: str) -> Silence:
    start, end = spec.window()
    silence = Silence(
        id=new_id(),
        rule_id=spec.rule_id,
        device_id=spec.device_id,
        tag=spec.tag,
        severity=spec.severity,
        starts_at=start,
        ends_at=end,
        comment=spec.comment,
        created_by=who,
        created_at=now_ms(),
    )
    with Session(engine, expire_on_commit=False) as s:
        s.add(silence)
        s.commit()
    return silence


def get_silence(engine: Engine, silence_id: str) -> Silence:
    with Session(engine) as s:
        silence = s.get(Silence, silence_id)
    if silence is None:
        raise NotFound(f"no silence with id {silence_id!r}")
    return silence


def expire_silence(engine: Engine, silence_id: str) -> Silence:
    """End the silence now (kept, so who silenced what stays on record)."""
    now = now_ms()
    with Session(engine, expire_on_commit=False) as s:
        silence = s.get(Silence, silence_id)
        if silence is None:
            raise NotFound(f"no silence with id {silence_id!r}")
        if silence.ends_at > now:
            silence.ends_at = max(now, silence.starts_at)
            s.add(silence)
            s.commit()
    return silence


def list_silences(engine: Engine, active: bool | None) -> list[Silence]:
    now = now_ms()
    query = select(Silence).order_by(col(Silence.ends_at).desc(), col(Silence.id))
    if active:
        query = query.where(col(Silence.starts_at) <= now, col(Silence.ends_at) > now)
    elif active is False:
        query = query.where((col(Silence.starts_at) > now) | (col(Silence.ends_at) <= now))
    with Session(engine) as s:
        return list(s.exec(query.limit(1000)).all())


def active_silences(s: Session, now: int) -> list[Silence]:
    return list(s.exec(select(Silence).where(col(Silence.starts_at) <= now, col(Silence.ends_at) > now)).all())


def matching(silences: Sequence[Silence], rule_id: str, severity: str, device_id: str, tags: list[str]) -> str | None:
    """The id of the first silence whose every matcher matches, or None."""
    for x in silences:
        if (
            (x.rule_id is None or x.rule_id == rule_id)
            and (x.device_id is None or x.device_id == device_id)
            and (x.tag is None or x.tag in tags)
            and (x.severity is None or x.severity == severity)
        ):
            return x.id
    return None
