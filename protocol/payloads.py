"""Payload schemas of DESIGN.md section 4, with strict decoding.

Every payload is a UTF-8 JSON object with `"v": 1`; `ts` is integer ms since the epoch.
"""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.errors import ProtocolError
from protocol.topics import Kind

VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_RELAY_BYTES = 64 * 1024
MAX_LOG_RECORDS = 1000
MAX_LOG_MSG_CHARS = 8192

COMMAND_NAMES = ("restart", "update", "reboot", "config_update", "ping")
RESULT_STATUSES = ("accepted", "running", "succeeded", "failed", "rejected", "expired")
FINAL_RESULT_STATUSES = frozenset({"succeeded", "failed", "rejected", "expired"})
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical")

Ts = Field(ge=0, lt=10**14)


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)
    v: Literal[1] = VERSION


class Birth(Payload):
    online: Literal[True] = True
    ts: int = Ts
    session: str = Field(min_length=1, max_length=64)
    agent_version: str = Field(default="", max_length=64)
    software_version: str = Field(default="", max_length=128)
    boot_id: str = Field(default="", max_length=64)


class Death(Payload):
    online: Literal[False] = False
    session: str = Field(default="", max_length=64)
    ts: int | None = None


class Heartbeat(Payload):
    ts: int = Ts
    seq: int = Field(default=0, ge=0)
    uptime_s: float = Field(default=0, ge=0)
    hostname: str = Field(default="", max_length=255)
    ips: list[str] = Field(default_factory=list, max_length=64)
    software_version: str = Field(default="", max_length=128)
    agent_version: str = Field(default="", max_length=64)


_METRIC_FIELDS = (
    "cpu_percent",
    "mem_percent",
    "mem_used_bytes",
    "disk_percent",
    "disk_free_bytes",
    "load1",
    "temp_c",
    "net_rx_bytes",
    "net_tx_bytes",
)


class Metrics(Payload):
    model_config = ConfigDict(extra="allow", frozen=True)
    ts: int = Ts
    cpu_percent: float | None = None
    mem_percent: float | None = None
    mem_used_bytes: int | None = None
    disk_percent: float | None = None
    disk_free_bytes: int | None = None
    load1: float | None = None
    temp_c: float | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None
    services: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fold_unknown_into_extra(self) -> "Metrics":
        unknown = dict(self.__pydantic_extra__ or {})
        if unknown:
            merged = {**unknown, **self.extra}
            object.__setattr__(self, "extra", merged)
            self.__pydantic_extra__.clear()
        return self


class LogRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1, max_length=64)
    ts: int = Ts
    level: str = "info"
    source: str = Field(default="", max_length=128)
    msg: str

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        aliases = {"warn": "warning", "err": "error", "crit": "critical", "fatal": "critical", "emerg": "critical",
                   "alert": "critical", "trace": "debug"}
        v = aliases.get(v, v)
        if v not in LOG_LEVELS:
            raise ValueError(f"level must be one of {', '.join(LOG_LEVELS)}")
        return v

    @field_validator("msg")
    @classmethod
    def _msg(cls, v: str) -> str:
        return v[:MAX_LOG_MSG_CHARS]


class LogBatch(Payload):
    records: list[LogRecord] = Field(max_length=MAX_LOG_RECORDS)
    dropped: int = Field(default=0, ge=0)


class Command(Payload):
    id: str = Field(min_length=1, max_length=64)
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    ts: int = Ts
    expires_at: int | None = None


class CommandResult(Payload):
    id: str = Field(min_length=1, max_length=64)
    status: Literal["accepted", "running", "succeeded", "failed", "rejected", "expired"]
    exit_code: int | None = None
    output: str = ""
    ts: int = Ts

    @field_validator("output")
    @classmethod
    def _cap(cls, v: str) -> str:
        return cap_output(v)


class ConfigDesired(Payload):
    version: int = Field(ge=0)
    config: dict[str, Any]


class ConfigReported(Payload):
    version: int = Field(ge=0)
    status: Literal["applied", "failed"]
    error: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


def cap_output(text: str, limit: int = MAX_OUTPUT_BYTES) -> str:
    """Keep the tail of `text` within `limit` UTF-8 bytes (the end says why it failed)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return "…[truncated]\n" + data[-(limit - 20) :].decode("utf-8", "ignore")


SCHEMAS: dict[Kind, type[Payload]] = {
    Kind.HEARTBEAT: Heartbeat,
    Kind.METRICS: Metrics,
    Kind.LOGS: LogBatch,
    Kind.CMD: Command,
    Kind.CMD_RESULT: CommandResult,
    Kind.CONFIG_DESIRED: ConfigDesired,
    Kind.CONFIG_REPORTED: ConfigReported,
}


def encode(payload: BaseModel) -> bytes:
    return payload.model_dump_json(exclude_none=False).encode()


def load_json(data: bytes | str, limit: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Parse a JSON object payload within a size limit."""
    if len(data) > limit:
        raise ProtocolError(f"payload of {len(data)} bytes exceeds the {limit}-byte limit")
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"payload is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("payload must be a JSON object")
    return obj


def decode(kind: Kind, data: bytes | str) -> Payload:
    """Decode the payload of a topic kind; raise ProtocolError with a readable reason."""
    if kind in (Kind.RELAY_UP, Kind.RELAY_DOWN):
        raise ProtocolError("relay payloads are opaque; use load_json")
    obj = load_json(data)
    if obj.get("v") != VERSION:
        raise ProtocolError(f"unsupported payload version {obj.get('v')!r}, expected {VERSION}")
    try:
        if kind is Kind.STATE:
            return Birth.model_validate(obj) if obj.get("online") is True else Death.model_validate(obj)
        return SCHEMAS[kind].model_validate(obj)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
