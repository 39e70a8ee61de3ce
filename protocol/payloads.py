"""Payload schemas (docs/protocol.md), with strict decoding.

Every payload is a UTF-8 JSON object with `"v": 1`; `ts` is integer ms since the epoch.
"""

import json
import re
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.errors import ProtocolError
from protocol.jsonload import INT_MAX, INT_MIN, MAX_DEPTH, _too_deep, parse_bounded
from protocol.topics import Kind

VERSION: Final = 1  # Final: its type is Literal[1], the only version `Payload.v` accepts
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_OUTPUT_BYTES = 64 * 1024
MAX_RELAY_BYTES = 64 * 1024
MAX_LOG_RECORDS = 1000
MAX_LOG_MSG_CHARS = 8192

COMMAND_NAMES = ("restart", "update", "reboot", "config_update", "ping")
ResultStatus = Literal["accepted", "running", "succeeded", "failed", "rejected", "expired"]
RESULT_STATUSES: tuple[ResultStatus, ...] = get_args(ResultStatus)
ConfigStatus = Literal["applied", "failed"]
FINAL_RESULT_STATUSES = frozenset({"succeeded", "failed", "rejected", "expired"})
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical")

MAX_ACK_IDS = 1000
MAX_EXTRA_BYTES = 16 * 1024  # a unit's `extra` larger than this is replaced by {"_truncated_bytes": N}
MAX_SERVICES = 64

Ts = Field(ge=0, lt=10**14)
# Every integer a unit sends fits a 64-bit database column, also when it arrives as a numeric string.
Int64 = Annotated[int, Field(ge=INT_MIN, le=INT_MAX)]
Count = Annotated[int, Field(ge=0, le=INT_MAX)]
# The unit's id for one reliable message (log batch, command result, config report): the service echoes it on
# `fleet/{id}/ack` once the message is stored, and the unit keeps the message until then (docs/protocol.md).
AckId = Annotated[str | None, Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False, allow_inf_nan=False)
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
    ts: Int64 | None = None


class Heartbeat(Payload):
    ts: int = Ts
    seq: Count = 0
    uptime_s: float = Field(default=0, ge=0)
    hostname: str = Field(default="", max_length=255)
    ips: list[str] = Field(default_factory=list, max_length=64)
    software_version: str = Field(default="", max_length=128)
    agent_version: str = Field(default="", max_length=64)


# The numeric fields of a metrics sample (the one list: ingest's columns, the series, the alert rules).
METRIC_FIELDS = (
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
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    ts: int = Ts
    cpu_percent: float | None = None
    mem_percent: float | None = None
    mem_used_bytes: Int64 | None = None
    disk_percent: float | None = None
    disk_free_bytes: Int64 | None = None
    load1: float | None = None
    temp_c: float | None = None
    net_rx_bytes: Int64 | None = None
    net_tx_bytes: Int64 | None = None
    services: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict, max_length=MAX_SERVICES
    )
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fold_unknown_into_extra(self) -> "Metrics":
        unknown = self.__pydantic_extra__
        if unknown:
            # Moved into `extra`, each value nests one level deeper than it arrived: still within MAX_DEPTH?
            if any(isinstance(v, dict | list) and _too_deep(v, MAX_DEPTH - 2) for v in unknown.values()):
                raise ValueError(f"an unknown key's value, kept in extra, would nest deeper than {MAX_DEPTH} levels")
            merged = {**unknown, **self.extra}
            object.__setattr__(self, "extra", merged)
            unknown.clear()
        # `extra` is stored with every sample and sent to every dashboard: one unit must not make it heavy.
        size = len(json.dumps(self.extra, separators=(",", ":"), ensure_ascii=False, default=str))
        if size > MAX_EXTRA_BYTES:
            object.__setattr__(self, "extra", {"_truncated_bytes": size})
        return self


class LogRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)
    id: str = Field(min_length=1, max_length=64)
    ts: int = Ts
    level: str = "info"
    source: str = Field(default="", max_length=128)
    msg: str

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        aliases = {
            "warn": "warning",
            "err": "error",
            "crit": "critical",
            "fatal": "critical",
            "emerg": "critical",
            "alert": "critical",
            "trace": "debug",
        }
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
    dropped: Count = 0  # records dropped since the last batch (older agents; added up by the service)
    dropped_total: Count | None = None  # records this unit ever dropped (its state dir's lifetime; kept as a maximum)
    ack_id: AckId = None


class Command(Payload):
    id: str = Field(min_length=1, max_length=64)
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    ts: int = Ts
    expires_at: Int64 | None = None


class CommandResult(Payload):
    id: str = Field(min_length=1, max_length=64)
    status: ResultStatus
    exit_code: Int64 | None = None
    output: str = ""
    ts: int = Ts
    ack_id: AckId = None

    @field_validator("output")
    @classmethod
    def _cap(cls, v: str) -> str:
        return cap_output(v)


class ConfigDesired(Payload):
    version: Count
    config: dict[str, Any]


class ConfigReported(Payload):
    version: Count
    status: ConfigStatus
    error: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    ack_id: AckId = None


class Ack(Payload):
    """Service -> unit: these reliable messages are stored (`ids`) or refused for good (`rejected`: id -> reason)."""

    ids: list[str] = Field(default_factory=list, max_length=MAX_ACK_IDS)
    rejected: dict[str, str] = Field(default_factory=dict, max_length=MAX_ACK_IDS)


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
    Kind.ACK: Ack,
}


def encode(payload: BaseModel) -> bytes:
    return payload.model_dump_json(exclude_none=False).encode()


def load_json(data: bytes | str, limit: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Parse a JSON object payload within the size, depth and number bounds of protocol.jsonload."""
    obj = parse_bounded(data, limit)
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
    except (ValueError, TypeError, RecursionError) as exc:  # a validator's own failure is still bad input
        raise ProtocolError(f"payload rejected: {exc.__class__.__name__}") from exc


_ACK_ID = re.compile(rb'"ack_id"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')


def salvage_ack_id(data: bytes) -> str | None:
    """The ack id of a payload that failed to decode, found without parsing it, so its sender can stop resending."""
    match = _ACK_ID.search(data[:MAX_PAYLOAD_BYTES])
    return match.group(1).decode() if match else None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
