"""Where a unit's web UI is served to a browser: an origin of its own per unit and port, never the dashboard's.

A page on the dashboard's origin could read the dashboard's answers with the operator's cookie (and so its CSRF
token) and act as the operator. A unit's pages come from whatever runs on the unit, so they get a host name of
their own: `<label>.<domain>`, one label per unit and port. The domain is FLEET_PROXY_ORIGIN's
(`https://*.units.example.com`: a wildcard DNS name that reaches the service). Without it, a service reached by a
loopback name uses `*.localhost`, which browsers resolve to the loopback themselves; reached by any other name it
has no origin to give, and says so.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["UnitOrigins", "label_for", "parse_origin_setting"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def label_for(device_id: str, port: int) -> str:
    """The host label of a unit's port: readable, unique (a hash of both), at most 59 characters."""
    readable = device_id.replace("_", "-")[:40].strip("-") or "unit"
    digest = hashlib.sha256(f"{device_id}:{port}".encode()).hexdigest()[:10]
    return f"{readable}--{port}--{digest}"


@dataclass(frozen=True)
class Configured:
    scheme: str
    domain: str
    port: int | None


def parse_origin_setting(value: str) -> Configured:
    """`http(s)://*.DOMAIN[:PORT]` -> its parts; ValueError saying what is wrong."""
    parts = urlsplit(value.strip().lower())
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://, e.g. https://*.units.example.com")
    host = parts.hostname or ""
    if not host.startswith("*.") or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("must be a wildcard origin with nothing after the host, e.g. https://*.units.example.com")
    domain = host[2:]
    if not _DOMAIN.fullmatch(domain) or "*" in domain:
        raise ValueError(f"{domain!r} is not a domain name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    return Configured(parts.scheme, domain, port)


def _split_host(host: str) -> tuple[str, str]:
    """`name:port` -> (name, ':port' or '')."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1], host[end + 1 :]
    name, colon, port = host.partition(":")
    return name, (colon + port if colon else "")


class UnitOrigins:
    """Tells a unit origin's host from the dashboard's, and builds a unit's origin for a request."""

    def __init__(self, setting: str | None) -> None:
        self.configured = parse_origin_setting(setting) if setting else None
        self.domain = self.configured.domain if self.configured else "localhost"

    def label_of(self, host: str) -> str | None:
        """The unit label when `host` (a Host header) is a unit origin of this service, else None."""
        name, _ = _split_host(host)
        suffix = "." + self.domain
        if not name.endswith(suffix):
            return None
        label = name[: -len(suffix)]
        return label if _LABEL.fullmatch(label) else None

    def origin(self, label: str, scheme: str, dashboard_host: str) -> str | None:
        """The unit origin for a browser that reached the dashboard as `scheme://dashboard_host`; None when this
        service has none to give (no FLEET_PROXY_ORIGIN and a name other than a loopback one)."""
        if self.configured is not None:
            port = f":{self.configured.port}" if self.configured.port else ""
            return f"{self.configured.scheme}://{label}.{self.configured.domain}{port}"
        name, port = _split_host(dashboard_host)
        if name not in LOOPBACK_NAMES:
            return None
        return f"{scheme}://{label}.localhost{port}"
