"""Salted slow hashing of secrets and tokens, with constant-time checks."""

import base64
import hashlib
import hmac
import os

# scrypt cost: ~15 ms per check here; units authenticate once per connection.
_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str | None) -> bool:
    """True when `secret` matches `stored`; never raises for malformed input."""
    if not stored or not isinstance(secret, str):
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def fingerprint(token: str) -> str:
    """Fast SHA-256 lookup key for high-entropy API tokens (never for passwords)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()
