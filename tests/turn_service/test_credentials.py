"""IceCredentials shapes: the browser array, the legacy single object, TTL clamping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from turn_service import IceCredentials, clamp_ttl, shape_ice_servers

URLS = [
    "turn:h:3478?transport=udp",
    "stun:h:3478",
    "turn:h:3478?transport=tcp",
    "turns:h:5349?transport=tcp",
]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, 3600), (60, 60), (1, 1), (0, 1), (-30, 1), (172800, 172800), (10**9, 172800)],
)
def test_clamp_ttl(requested: int | None, expected: int) -> None:
    assert clamp_ttl(requested, default=3600, maximum=172800) == expected


def test_default_above_maximum_is_clamped_too() -> None:
    assert clamp_ttl(None, default=10_000, maximum=600) == 600


def test_stun_gets_its_own_entry_without_credentials() -> None:
    assert shape_ice_servers(URLS, "u", "c") == [
        {"urls": ["stun:h:3478"]},
        {
            "urls": ["turn:h:3478?transport=udp", "turn:h:3478?transport=tcp", "turns:h:5349?transport=tcp"],
            "username": "u",
            "credential": "c",
        },
    ]


def test_only_stun_or_only_turn() -> None:
    assert shape_ice_servers(["stun:h"], "u", "c") == [{"urls": ["stun:h"]}]
    assert shape_ice_servers(["turns:h:5349"], "u", "c") == [
        {"urls": ["turns:h:5349"], "username": "u", "credential": "c"}
    ]


def make(**kwargs) -> IceCredentials:
    return IceCredentials(
        ice_servers=shape_ice_servers(URLS, "1700000000:abc", "cred=="),
        expires_at=datetime(2023, 11, 14, 22, 13, 20, 987654, tzinfo=UTC),
        ttl=600,
        **kwargs,
    )


def test_api_shape() -> None:
    api = make().to_api()
    assert api == {
        "iceServers": shape_ice_servers(URLS, "1700000000:abc", "cred=="),
        "expiresAt": "2023-11-14T22:13:20Z",
        "ttl": 600,
    }


def test_legacy_shape_is_one_object_with_every_url() -> None:
    assert make().to_legacy() == {
        "iceServers": {
            "urls": [
                "stun:h:3478",
                "turn:h:3478?transport=udp",
                "turn:h:3478?transport=tcp",
                "turns:h:5349?transport=tcp",
            ],
            "username": "1700000000:abc",
            "credential": "cred==",
        },
        "expiresAt": "2023-11-14T22:13:20Z",
    }


def test_expires_at_is_rendered_in_utc() -> None:
    from datetime import timedelta, timezone

    creds = IceCredentials(
        ice_servers=[], expires_at=datetime(2024, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))), ttl=1
    )
    assert creds.to_api()["expiresAt"] == "2024-01-01T00:00:00Z"


def test_to_api_returns_a_copy() -> None:
    creds = make()
    creds.to_api()["iceServers"][1]["urls"].append("turn:evil")
    assert "turn:evil" not in creds.urls


def test_username_and_credential_accessors() -> None:
    creds = make()
    assert creds.username == "1700000000:abc"
    assert creds.credential == "cred=="
    no_turn = IceCredentials(ice_servers=[{"urls": "stun:h"}], expires_at=datetime.now(UTC), ttl=1)
    assert no_turn.username is None and no_turn.credential is None
    assert no_turn.urls == ["stun:h"]
