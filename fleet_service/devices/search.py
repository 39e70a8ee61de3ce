"""Finding units by what an operator types: a piece of the id, name, host name or an address.

What is typed is matched as text: LIKE's wildcards (`%`, `_`) and its escape character are escaped, so `_` finds
an underscore and `%` a percent sign instead of every unit. Addresses live as a JSON list in `device.ips`; its
text is searched only for input made of address characters, so a quote or a comma cannot match the JSON around
the addresses.
"""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, String, cast, func, or_
from sqlmodel import col

from fleet_service.devices.models import Device

LIKE_ESCAPE = "\\"
ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f.:]+")  # IPv4 and IPv6 characters


def like_literal(text: str) -> str:
    """`text` with LIKE's special characters escaped (use with `escape=LIKE_ESCAPE`)."""
    return re.sub(r"([\\%_])", r"\\\1", text)


def text_match(q: str) -> ColumnElement[bool]:
    """Units whose id, name, host name or one of whose addresses contains `q`, ignoring case."""
    pattern = f"%{like_literal(q.lower())}%"
    fields = [func.lower(Device.id), func.lower(Device.name), func.lower(Device.hostname)]
    if ADDRESS_TEXT.fullmatch(q):
        fields.append(func.lower(cast(col(Device.ips), String)))
    return or_(*(field.like(pattern, escape=LIKE_ESCAPE) for field in fields))
