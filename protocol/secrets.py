"""Salted slow hashing of secrets and passwords, with constant-time checks.

A hash is `scrypt$N$r$p$salt$digest`: it names its own cost, so a hash made at an older cost keeps verifying, and
`needs_rehash` tells when to hash the secret again at the current cost the next time it is presented.

Two costs:
- PASSWORD_COST for what people choose (dashboard passwords): OWASP's Password Storage Cheat Sheet minimum for
  scrypt, N=2^17, r=8, p=1 (128 MiB and roughly 0.1-0.5 s per hash).
- SECRET_COST for the 256-bit random secrets the service generates itself (units): nobody can guess one, so
  stretching adds nothing there, and every unit of a fleet reconnecting at once pays it.
"""

import base64
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

_SCHEME = "scrypt"


@dataclass(frozen=True)
class Cost:
    n: int
    r: int
    p: int

    @property
    def memory(self) -> int:
        """Bytes scrypt needs (OpenSSL's own bound; hashlib refuses more than its `maxmem`)."""
        return 128 * self.r * (self.n + self.p + 2)

    def at_least(self, other: "Cost") -> bool:
        return self.n >= other.n and self.r >= other.r and self.p >= other.p


PASSWORD_COST = Cost(2**17, 8, 1)
SECRET_COST = Cost(2**14, 8, 1)
# A stored hash asking for more memory than this is refused rather than computed (hashes are ours; this only
# stops a corrupt or planted row from costing gigabytes).
MAX_MEMORY = 256 * 1024 * 1024
# Each hash holds its memory while it runs (128 MiB at PASSWORD_COST): at most this many run at once, which is
# all the cores there are to run them on anyway.
_running = threading.BoundedSemaphore(min(os.cpu_count() or 1, 8))


def _scrypt(secret: str, salt: bytes, cost: Cost, dklen: int = 32) -> bytes:
    with _running:
        return hashlib.scrypt(
            secret.encode(), salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=dklen, maxmem=cost.memory + 1024 * 1024
        )


def hash_secret(secret: str, cost: Cost = SECRET_COST) -> str:
    salt = os.urandom(16)
    digest = _scrypt(secret, salt, cost)
    return f"{_SCHEME}${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(digest)}"


def hash_password(password: str) -> str:
    """A hash of something a person chose, at PASSWORD_COST."""
    return hash_secret(password, PASSWORD_COST)


def cost_of(stored: str | None) -> Cost | None:
    """The cost a stored hash was made at; None when it is not one of ours."""
    if not isinstance(stored, str):
        return None
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return None
    try:
        cost = Cost(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return None
    return cost if min(cost.n, cost.r, cost.p) > 0 else None


def needs_rehash(stored: str | None, cost: Cost = PASSWORD_COST) -> bool:
    """True when `stored` was made below `cost` (or is not a hash of ours): after the secret it was checked
    against matched, store hash_secret(secret, cost) in its place."""
    made = cost_of(stored)
    return made is None or not made.at_least(cost)


def verify_secret(secret: str, stored: str | None) -> bool:
    """True when `secret` matches `stored`; never raises for malformed input."""
    cost = cost_of(stored)
    if cost is None or not isinstance(secret, str) or cost.memory > MAX_MEMORY:
        return False
    try:
        salt, digest = stored.split("$")[4:]  # type: ignore[union-attr]
        expected = base64.urlsafe_b64decode(digest)
        actual = _scrypt(secret, base64.urlsafe_b64decode(salt), cost, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def fingerprint(token: str) -> str:
    """Fast SHA-256 lookup key for high-entropy API tokens (never for passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()
