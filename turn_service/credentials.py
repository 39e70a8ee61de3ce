"""The credential value handed to WebRTC clients, and the two JSON shapes it is served in."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["IceCredentials", "clamp_ttl", "shape_ice_servers"]


def clamp_ttl(requested: int | None, default: int, maximum: int) -> int:
    """The TTL to issue: `default` when none was asked for, always within 1 s .. `maximum`."""
    ttl = default if requested is None else int(requested)
    return max(1, min(ttl, maximum))


def shape_ice_servers(urls: Iterable[str], username: str, credential: str) -> list[dict[str, Any]]:
    """Browser `iceServers`: STUN URLs in their own entry, TURN(S) URLs in one entry with the credential."""
    stun = [u for u in urls if u.startswith(("stun:", "stuns:"))]
    turn = [u for u in urls if u.startswith(("turn:", "turns:"))]
    servers: list[dict[str, Any]] = []
    if stun:
        servers.append({"urls": stun})
    if turn:
        # A turn: URL without username/credential makes RTCPeerConnection throw, so they always travel together.
        servers.append({"urls": turn, "username": username, "credential": credential})
    return servers


def _zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class IceCredentials:
    """Short-lived ICE servers for one client: `ttl` is the seconds left when issued, `expires_at` is UTC."""

    ice_servers: Sequence[dict[str, Any]]
    expires_at: datetime
    ttl: int
    provider: str = ""

    @property
    def username(self) -> str | None:
        """The TURN username (the handle Cloudflare revokes by), or None if no entry carries one."""
        for server in self.ice_servers:
            if server.get("username"):
                return server["username"]
        return None

    @property
    def credential(self) -> str | None:
        for server in self.ice_servers:
            if server.get("username"):
                return server.get("credential")
        return None

    @property
    def urls(self) -> list[str]:
        """Every URL of every entry, in order."""
        out: list[str] = []
        for server in self.ice_servers:
            urls = server.get("urls", [])
            out.extend([urls] if isinstance(urls, str) else urls)
        return out

    def to_api(self) -> dict[str, Any]:
        """`{"iceServers": [...], "expiresAt": "...Z", "ttl": N}` for GET /api/turn-credentials."""
        return {
            "iceServers": copy.deepcopy(list(self.ice_servers)),
            "expiresAt": _zulu(self.expires_at),
            "ttl": self.ttl,
        }

    def to_legacy(self) -> dict[str, Any]:
        """The original single-object shape for GET /turn-credentials: all URLs, one username/credential."""
        return {
            "iceServers": {"urls": self.urls, "username": self.username, "credential": self.credential},
            "expiresAt": _zulu(self.expires_at),
        }
