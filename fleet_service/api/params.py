"""Bounds on what a request may carry: offsets, times, JSON documents. A number the database cannot hold or a
document no serializer can write is a 422 that says which parameter, never a 500."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator

from fleet_service.errors import Invalid

__all__ = ["MAX_JSON_DEPTH", "MAX_OFFSET", "MAX_TS_MS", "JsonObject", "Offset", "check_json_document", "parse_time"]

MAX_OFFSET = 10**9
MAX_JSON_DEPTH = 32  # config documents and command args: far past any real one, far below the serializers' limits
MAX_TS_MS = 10**14  # the protocol's bound on timestamps (protocol.payloads.Ts): year 5138
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also says yes to "³", which int() refuses

# Paging: past 10**9 rows there is nothing to show, and a bigger number overflows the database's integer.
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


def check_json_document(value: Any, what: str) -> Any:
    """ValueError for a document nested past MAX_JSON_DEPTH or holding NaN/Infinity, which are not JSON (Python
    reads 1e400 as inf) and which PostgreSQL refuses to store."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"{what} is nested too deep (at most {MAX_JSON_DEPTH} levels)")
            pending.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{what} holds NaN or Infinity (or a number past 1e308), which JSON does not allow")
    return value


# A free-form JSON object stored and sent on as given (command args).
JsonObject = Annotated[dict[str, Any], AfterValidator(lambda v: check_json_document(v, "args"))]


def parse_time(value: str | None, name: str) -> int | None:
    """Integer milliseconds since the epoch or an ISO 8601 time with a zone, 0 <= ms < 10**14; 422 otherwise."""
    if value is None or value == "":
        return None
    if _DIGITS.fullmatch(value):
        ms = int(value) if len(value) <= 15 else MAX_TS_MS  # no int() of a thousand digits
    else:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"{name} must be milliseconds since the epoch or an ISO 8601 time") from None
        if dt.tzinfo is None:
            raise Invalid(f"{name} needs a time zone (e.g. a trailing Z)")
        ms = int(dt.timestamp() * 1000)
    if not 0 <= ms < MAX_TS_MS:
        raise Invalid(f"{name} must lie between 1970 and the year 5138 (0 to {MAX_TS_MS - 1} ms)")
    return ms
