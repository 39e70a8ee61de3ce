"""HmacProvider unit behaviour: username format, opaque ids, password scheme, verify, clamping."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from turn_service import HmacProvider, TurnConfigError, turn_password

NOW = 1_700_000_000
URLS = ["stun:h:3478", "turn:h:3478?transport=udp"]


def provider(secrets=("s3cret-new", "s3cret-old"), now: float = NOW, **kwargs) -> HmacProvider:
    return HmacProvider(list(secrets), URLS, clock=lambda: now, **kwargs)


def test_password_is_base64_hmac_sha1_of_the_username() -> None:
    expected = base64.b64encode(hmac.new(b"key", b"123:user", hashlib.sha1).digest()).decode()
    assert turn_password("key", "123:user") == expected
    # The TURN REST API draft's worked example shape: 28 chars with padding.
    assert len(expected) == 28 and expected.endswith("=")


def test_minted_username_is_expiry_and_opaque_id() -> None:
    creds = provider().mint("unit-7", ttl=600)
    expiry, opaque = creds.username.split(":")
    assert int(expiry) == NOW + 600
    assert creds.expires_at.timestamp() == NOW + 600
    assert creds.ttl == 600
    assert "unit-7" not in creds.username
    assert len(opaque) == 22 and ":" not in opaque
    assert creds.credential == turn_password("s3cret-new", creds.username)
    assert creds.provider == "hmac"


def test_opaque_id_is_stable_per_identity_and_keyed() -> None:
    p = provider()
    assert p.opaque_id("unit-7") == p.opaque_id("unit-7")
    assert p.opaque_id("unit-7") != p.opaque_id("unit-8")
    # Keyed with the secret: someone who knows the device ids cannot map usernames back to them.
    assert provider(secrets=["other"]).opaque_id("unit-7") != p.opaque_id("unit-7")
    assert hashlib.sha256(b"unit-7").hexdigest()[:22] != p.opaque_id("unit-7")


@pytest.mark.parametrize(("requested", "ttl"), [(None, 3600), (0, 1), (-1, 1), (100, 100), (10**8, 48 * 3600)])
def test_ttl_is_clamped(requested: int | None, ttl: int) -> None:
    creds = provider().mint("u", requested)
    assert creds.ttl == ttl
    assert int(creds.username.split(":")[0]) == NOW + ttl


def test_custom_default_and_max() -> None:
    p = provider(default_ttl=120, max_ttl=300)
    assert p.mint("u").ttl == 120
    assert p.mint("u", 301).ttl == 300


def test_verify_accepts_any_configured_secret() -> None:
    new = provider(secrets=["s3cret-new"]).mint("u")
    old = provider(secrets=["s3cret-old"]).mint("u")
    rotating = provider(secrets=["s3cret-new", "s3cret-old"])
    assert rotating.verify(new.username, new.credential)
    assert rotating.verify(old.username, old.credential)
    assert not provider(secrets=["s3cret-new"]).verify(old.username, old.credential)


def test_verify_refuses_expired_tampered_and_malformed() -> None:
    creds = provider().mint("u", ttl=60)
    assert not provider(now=NOW + 60).verify(creds.username, creds.credential)
    assert provider(now=NOW + 59).verify(creds.username, creds.credential)
    later = f"{NOW + 10**6}:{creds.username.split(':')[1]}"
    assert not provider().verify(later, creds.credential)
    assert not provider().verify(creds.username, creds.credential[:-2] + "A=")
    for bad in ["", "nocolon", ":x", "abc:x", "１２:x", "-5:x"]:
        assert not provider().verify(bad, creds.credential)
    assert not provider().verify(creds.username, "ünïcode")


def test_without_a_secret_or_turn_url_it_refuses_to_start() -> None:
    with pytest.raises(TurnConfigError, match="FLEET_TURN_SECRETS"):
        HmacProvider([], URLS)
    with pytest.raises(TurnConfigError, match="FLEET_TURN_URLS"):
        HmacProvider(["s"], ["stun:h:3478"])
