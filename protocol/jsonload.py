"""Parse untrusted JSON payloads within bounds: size, nesting depth, integer range, finite numbers, UTF-8 text.

A unit's payload is stored and re-serialised by the service (SQLite, PostgreSQL JSON columns, live events);
what one database or encoder accepts and the next refuses must be refused here, at the door, as a
ProtocolError that costs exactly that message.
"""

import json
import math
import re
from typing import Any

from protocol.errors import ProtocolError

MAX_DEPTH = 32  # objects/arrays nested inside each other; real payloads use 3 or 4
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # what a 64-bit database integer holds
# An escaped UTF-16 surrogate. Paired (an emoji as json.dumps writes it) it is a character; alone it becomes a str
# that no UTF-8 encoder (pydantic's JSON, SQLite, PostgreSQL) can write.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _int(text: str) -> int:
    value = int(text)  # ValueError past Python's 4,300-digit limit
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"integer {text[:24]}... does not fit in 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _text(data: bytes | str) -> str:
    """Strict UTF-8: json.loads would decode encoded surrogates (b"\\xed\\xa0\\x80") and UTF-16 as well."""
    if isinstance(data, str):
        data.encode("utf-8")  # UnicodeEncodeError for a lone surrogate in the text itself
        return data
    return str(data, "utf-8-sig")


def _utf8_encodable(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_bounded(data: bytes | str, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """Any JSON value within `limit` bytes and the bounds above; ProtocolError says which bound broke."""
    if len(data) > limit:
        raise ProtocolError(f"payload of {len(data)} bytes exceeds the {limit}-byte limit")
    try:
        text = _text(data)
        obj = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError as exc:
        raise ProtocolError(f"payload nests deeper than {max_depth} levels") from exc
    except ValueError as exc:  # JSONDecodeError and Unicode errors are ValueErrors, as are our bounds
        raise ProtocolError(f"payload is not valid UTF-8 JSON within bounds: {exc}") from exc
    # Nesting deeper than max_depth needs more than max_depth opening brackets: count them in C first.
    opening = text.count("{") + text.count("[")
    if isinstance(obj, dict | list) and opening > max_depth and _too_deep(obj, max_depth):
        raise ProtocolError(f"payload nests deeper than {max_depth} levels")
    # Likewise a lone surrogate needs its escape in the text: only then look for it in the parsed value.
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and not _utf8_encodable(obj):
        raise ProtocolError("payload holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is no UTF-8 text")
    return obj
