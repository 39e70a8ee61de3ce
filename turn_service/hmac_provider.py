"""Self-minted TURN REST API credentials for coturn's `use-auth-secret` mode."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from turn_service.credentials import IceCredentials, clamp_ttl, shape_ice_servers
from turn_service.errors import TurnConfigError

__all__ = ["HmacProvider", "turn_password"]

# coturn limits usernames to 509 bytes; ours are "<10 digits>:<22 chars>".
_OPAQUE_CHARS = 22
_ID_CONTEXT = b"fleet-turn-user-id\x00"


def turn_password(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), the password coturn derives from a static-auth-secret."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class HmacProvider:
    """Mints `<expiry>:<opaque id>` usernames; the first secret mints, every secret verifies."""

    name = "hmac"

    def __init__(
        self,
        secrets: Sequence[str],
        urls: Sequence[str],
        *,
        default_ttl: int = 3600,
        max_ttl: int = 48 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise TurnConfigError(
                "the hmac TURN provider needs a shared secret: set FLEET_TURN_SECRETS to the "
                "static-auth-secret configured in coturn"
            )
        if not any(u.startswith(("turn:", "turns:")) for u in urls):
            raise TurnConfigError(
                "the hmac TURN provider needs at least one turn: or turns: URL in FLEET_TURN_URLS "
                "(e.g. turn:turn.example.com:3478?transport=udp)"
            )
        self._secrets = list(secrets)
        self._urls = list(urls)
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._clock = clock

    def opaque_id(self, identity: str) -> str:
        """A stable, non-reversible handle for `identity`: usernames travel in clear on the wire."""
        mac = hmac.new(self._secrets[0].encode(), _ID_CONTEXT + identity.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode("ascii")[:_OPAQUE_CHARS]

    def mint(self, identity: str, ttl: int | None = None) -> IceCredentials:
        ttl = clamp_ttl(ttl, self._default_ttl, self._max_ttl)
        expiry = int(self._clock()) + ttl
        username = f"{expiry}:{self.opaque_id(identity)}"
        credential = turn_password(self._secrets[0], username)
        return IceCredentials(
            ice_servers=shape_ice_servers(self._urls, username, credential),
            expires_at=datetime.fromtimestamp(expiry, UTC),
            ttl=ttl,
            provider=self.name,
        )

    def verify(self, username: str, credential: str) -> bool:
        """True when any configured secret produced `credential` and the username has not expired."""
        expiry_text, sep, _ = username.partition(":")
        if not sep or not (expiry_text.isascii() and expiry_text.isdigit()) or int(expiry_text) <= self._clock():
            return False
        given = credential.encode()
        # Check every secret (no early exit) so timing does not reveal which one matched.
        matched = False
        for secret in self._secrets:
            matched |= hmac.compare_digest(turn_password(secret, username).encode(), given)
        return matched
