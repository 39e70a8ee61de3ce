"""FLEET_TURN_* parsing: comma lists, JSON lists, errors that name the variable and never echo secrets."""

from __future__ import annotations

import pytest

from turn_service import TurnConfigError, TurnSettings, generate_secret, load_settings

URLS = "stun:turn.example.com:3478,turn:turn.example.com:3478?transport=udp,turn:turn.example.com:3478?transport=tcp,turns:turn.example.com:5349?transport=tcp"  # noqa: E501


def test_defaults() -> None:
    settings = load_settings()
    assert settings.provider == "hmac"
    assert settings.secrets == []
    assert settings.urls == []
    assert settings.ttl == 3600
    assert settings.max_ttl == 48 * 3600
    assert settings.cloudflare_base_url == "https://rtc.live.cloudflare.com/v1"


def test_documented_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TURN_PROVIDER", "Cloudflare")
    monkeypatch.setenv("FLEET_TURN_SECRETS", "new-secret, old-secret ,")
    monkeypatch.setenv("FLEET_TURN_URLS", URLS)
    monkeypatch.setenv("FLEET_TURN_TTL", "600")
    monkeypatch.setenv("FLEET_TURN_CLOUDFLARE_KEY_ID", "key-1")
    monkeypatch.setenv("FLEET_TURN_CLOUDFLARE_API_TOKEN", "token-1")
    monkeypatch.setenv("FLEET_TURN_CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/v1/")
    settings = load_settings()
    assert settings.provider == "cloudflare"
    assert settings.minting_secret == "new-secret"
    assert settings.accepted_secrets == ["new-secret", "old-secret"]
    assert settings.urls == URLS.split(",")
    assert settings.ttl == 600
    assert settings.cloudflare_key_id == "key-1"
    assert settings.cloudflare_api_token.get_secret_value() == "token-1"
    assert settings.cloudflare_base_url == "http://127.0.0.1:9/v1"


def test_single_values_and_json_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TURN_SECRETS", "only-one")
    monkeypatch.setenv("FLEET_TURN_URLS", '["turn:h:3478", "stun:h"]')
    settings = load_settings()
    assert settings.accepted_secrets == ["only-one"]
    assert settings.urls == ["turn:h:3478", "stun:h"]


def test_keyword_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TURN_TTL", "600")
    assert load_settings(ttl=60, secrets=["a", "b"]).ttl == 60
    assert load_settings(secrets=["a", "b"]).accepted_secrets == ["a", "b"]


def test_secrets_stay_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TURN_SECRETS", "hunter2-very-secret")
    monkeypatch.setenv("FLEET_TURN_CLOUDFLARE_API_TOKEN", "cf-token-very-secret")
    text = repr(load_settings()) + str(load_settings())
    assert "very-secret" not in text


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("FLEET_TURN_PROVIDER", "twilio", "FLEET_TURN_PROVIDER"),
        ("FLEET_TURN_URLS", "http://turn.example.com", "not an ICE URL"),
        ("FLEET_TURN_URLS", "turn:h:3478?transport=sctp", "FLEET_TURN_URLS"),
        ("FLEET_TURN_TTL", "0", "FLEET_TURN_TTL"),
        ("FLEET_TURN_TTL", "soon", "FLEET_TURN_TTL"),
        ("FLEET_TURN_TTL", "999999", "larger than max_ttl"),
        ("FLEET_TURN_CLOUDFLARE_BASE_URL", "rtc.live.cloudflare.com", "FLEET_TURN_CLOUDFLARE_BASE_URL"),
    ],
)
def test_bad_values_are_config_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expect: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(TurnConfigError, match=expect):
        load_settings()


def test_config_errors_do_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TURN_SECRETS", '["hunter2-in-broken-json"')
    monkeypatch.setenv("FLEET_TURN_CLOUDFLARE_API_TOKEN", "cf-token-hunter3")
    monkeypatch.setenv("FLEET_TURN_TTL", "-5")
    with pytest.raises(TurnConfigError) as info:
        load_settings()
    assert "FLEET_TURN_SECRETS" in str(info.value)
    assert "FLEET_TURN_TTL" in str(info.value)
    assert "hunter" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_settings_are_immutable() -> None:
    with pytest.raises(Exception, match="frozen"):
        TurnSettings().ttl = 5  # type: ignore[misc]


def test_generated_secrets_are_long_and_distinct() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b and len(a) >= 40
