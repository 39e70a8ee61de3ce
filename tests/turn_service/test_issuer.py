"""TurnIssuer: provider choice, start-up refusal, rate limiting, counters, the transport seam."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.turn_service.standin import API_TOKEN, KEY_ID, CloudflareStandIn
from turn_service import (
    TurnConfigError,
    TurnIssuer,
    TurnRateLimitError,
    TurnUnsupportedError,
    TurnUpstreamError,
    generate_secret,
    load_settings,
)

URLS = "stun:turn.example.com:3478,turn:turn.example.com:3478?transport=udp"


def hmac_settings(**kwargs):
    return load_settings(secrets="mint-secret,old-secret", urls=URLS, **kwargs)


async def test_hmac_issue_and_verify() -> None:
    async with TurnIssuer(hmac_settings(ttl=900)) as issuer:
        creds = await issuer.issue("unit-7")
        assert creds.ttl == 900
        assert creds.provider == issuer.provider == "hmac"
        assert issuer.verify(creds.username, creds.credential)
        assert (await issuer.issue("unit-7", ttl=10**7)).ttl == 48 * 3600
        assert (await issuer.issue("unit-7", ttl=0)).ttl == 1


async def test_hmac_without_secret_refuses_to_start_until_one_is_generated() -> None:
    settings = load_settings(urls=URLS)
    with pytest.raises(TurnConfigError, match="FLEET_TURN_SECRETS"):
        TurnIssuer(settings)
    # What an embedded dev set-up can do: generate one (and configure its TURN server with it).
    issuer = TurnIssuer(load_settings(urls=URLS, secrets=generate_secret()))
    assert (await issuer.issue("dev")).username


def test_cloudflare_without_key_refuses_to_start() -> None:
    with pytest.raises(TurnConfigError, match="FLEET_TURN_CLOUDFLARE_KEY_ID"):
        TurnIssuer(load_settings(provider="cloudflare"))


async def test_unsupported_operations_per_provider(standin: CloudflareStandIn) -> None:
    with pytest.raises(TurnUnsupportedError, match="rotate FLEET_TURN_SECRETS"):
        await TurnIssuer(hmac_settings()).revoke("123:abc")
    settings = load_settings(
        provider="cloudflare",
        cloudflare_key_id=KEY_ID,
        cloudflare_api_token=API_TOKEN,
        cloudflare_base_url=standin.base_url,
    )
    async with TurnIssuer(settings) as issuer:
        with pytest.raises(TurnUnsupportedError):
            issuer.verify("u", "c")


async def test_rate_limit_per_identity() -> None:
    issuer = TurnIssuer(hmac_settings(rate_per_minute=6, rate_burst=2))
    await issuer.issue("unit-1")
    await issuer.issue("unit-1")
    with pytest.raises(TurnRateLimitError) as info:
        await issuer.issue("unit-1")
    assert 9 < info.value.retry_after <= 10
    assert "retry in 10 s" in str(info.value)
    await issuer.issue("unit-2")  # other identities are unaffected
    assert issuer.counters()["turn_errors_total"] == {"rate_limited": 1}


async def test_rate_limit_can_be_turned_off() -> None:
    issuer = TurnIssuer(hmac_settings(rate_per_minute=0, rate_burst=1))
    assert issuer.limiter is None
    for _ in range(20):
        await issuer.issue("unit-1")


async def test_empty_identity_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        await TurnIssuer(hmac_settings()).issue("")


async def test_counters() -> None:
    issuer = TurnIssuer(hmac_settings())
    for identity in ["a", "a", "b"]:
        await issuer.issue(identity)
    assert issuer.counters() == {
        "turn_credentials_issued_total": {"hmac": 3},
        "turn_credentials_issued_by_identity_total": {"a": 2, "b": 1},
        "turn_errors_total": {},
        "turn_upstream_requests_total": {},
        "turn_upstream_errors_total": {},
    }


async def test_cloudflare_through_the_issuer(standin: CloudflareStandIn) -> None:
    settings = load_settings(
        provider="cloudflare",
        cloudflare_key_id=KEY_ID,
        cloudflare_api_token=API_TOKEN,
        cloudflare_base_url=standin.base_url,
        ttl=1200,
    )
    async with TurnIssuer(settings) as issuer:
        first = await issuer.issue("unit-1")
        second = await issuer.issue("operator@example.com", ttl=60)  # shared credential: the ttl asked for is moot
        assert first.username == second.username == "cf-user-1"
        assert json.loads(standin.requests[0].body) == {"ttl": 1200}
        await issuer.revoke(first.username)
        standin.mode = "error"
        with pytest.raises(TurnUpstreamError):
            await issuer.issue("unit-1")
        counters = issuer.counters()
    assert counters["turn_credentials_issued_total"] == {"cloudflare": 2}
    assert counters["turn_errors_total"] == {"upstream": 1}
    assert counters["turn_upstream_requests_total"] == {"generate": 2, "revoke": 1}
    assert counters["turn_upstream_errors_total"] == {"status": 1}


async def test_transport_seam() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"iceServers": {"urls": ["turn:t:3478"], "username": "legacy-u", "credential": "legacy-c"}}
        return httpx.Response(201, json=body)

    settings = load_settings(provider="cloudflare", cloudflare_key_id="k", cloudflare_api_token="t")
    async with TurnIssuer(settings, transport=httpx.MockTransport(answer)) as issuer:
        creds = await issuer.issue("unit-1")
    assert str(seen[0].url) == "https://rtc.live.cloudflare.com/v1/turn/keys/k/credentials/generate-ice-servers"
    # The older single-object answer is normalised into the browser array.
    assert creds.to_api()["iceServers"] == [{"urls": ["turn:t:3478"], "username": "legacy-u", "credential": "legacy-c"}]
