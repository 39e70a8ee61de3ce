"""CloudflareProvider against a real local HTTP server speaking Cloudflare's documented shapes."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable

import pytest

from tests.turn_service.standin import API_TOKEN, BODY_MARKER, KEY_ID, CloudflareStandIn
from turn_service import CloudflareProvider, TurnConfigError, TurnUpstreamError

Factory = Callable[..., CloudflareProvider]


@pytest.fixture
async def provider_factory(standin: CloudflareStandIn) -> AsyncIterator[Factory]:
    made: list[CloudflareProvider] = []

    def make(**kwargs) -> CloudflareProvider:
        kwargs.setdefault("base_url", standin.base_url)
        kwargs.setdefault("timeout", 5.0)
        provider = CloudflareProvider(kwargs.pop("key_id", KEY_ID), kwargs.pop("api_token", API_TOKEN), **kwargs)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


def assert_leaks_nothing(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    shown = "".join(traceback.format_exception(exc)) + caplog.text
    assert API_TOKEN not in shown
    assert BODY_MARKER not in shown


async def test_generate_sends_bearer_and_ttl_and_returns_browser_shape(
    standin: CloudflareStandIn, provider_factory: Factory
) -> None:
    creds = await provider_factory(ttl=7200).get()

    (request,) = standin.requests
    assert request.path == f"/v1/turn/keys/{KEY_ID}/credentials/generate-ice-servers"
    assert request.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"ttl": 7200}

    api = creds.to_api()
    assert api["iceServers"][0] == {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]}
    assert api["iceServers"][1]["username"] == "cf-user-1"
    assert api["iceServers"][1]["credential"] == "cf-cred-1"
    assert 7190 <= api["ttl"] <= 7200
    assert creds.provider == "cloudflare"
    assert creds.to_legacy()["iceServers"]["username"] == "cf-user-1"


async def test_ttl_is_capped_at_cloudflares_48_hours(standin: CloudflareStandIn, provider_factory: Factory) -> None:
    await provider_factory(ttl=10 * 24 * 3600).get()
    assert json.loads(standin.requests[0].body) == {"ttl": 48 * 3600}


async def test_second_call_is_served_from_cache(standin: CloudflareStandIn, provider_factory: Factory) -> None:
    provider = provider_factory(ttl=3600)
    first = await provider.get()
    second = await provider.get()
    assert len(standin.generate_requests()) == 1
    assert second.username == first.username == "cf-user-1"
    assert second.expires_at == first.expires_at
    assert provider.requests["generate"] == 1


async def test_callers_cannot_mutate_the_cache(provider_factory: Factory) -> None:
    provider = provider_factory()
    first = await provider.get()
    first.ice_servers[1]["username"] = "tampered"
    assert (await provider.get()).username == "cf-user-1"


async def test_refreshes_after_half_the_ttl(standin: CloudflareStandIn, provider_factory: Factory) -> None:
    provider = provider_factory(ttl=2)
    assert (await provider.get()).username == "cf-user-1"
    assert (await provider.get()).username == "cf-user-1"
    await asyncio.sleep(1.1)
    refreshed = await provider.get()
    assert refreshed.username == "cf-user-2"
    assert len(standin.generate_requests()) == 2


async def test_concurrent_callers_share_one_upstream_request(
    standin: CloudflareStandIn, provider_factory: Factory
) -> None:
    standin.delay = 0.3
    provider = provider_factory()
    results = await asyncio.gather(*(provider.get() for _ in range(25)))
    assert {r.username for r in results} == {"cf-user-1"}
    assert len(standin.generate_requests()) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    standin: CloudflareStandIn, provider_factory: Factory
) -> None:
    standin.delay = 0.3
    provider = provider_factory()
    impatient = asyncio.create_task(provider.get())
    patient = asyncio.create_task(provider.get())
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert (await patient).username == "cf-user-1"
    assert len(standin.generate_requests()) == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error", "HTTP 500"),
        ("badjson", "unusable body"),
        ("badshape", "unusable body"),
        ("hang", "did not answer within 0.3 s"),
    ],
)
async def test_upstream_failures_become_turn_upstream_error_without_body_or_token(
    standin: CloudflareStandIn, provider_factory: Factory, caplog: pytest.LogCaptureFixture, mode: str, message: str
) -> None:
    caplog.set_level(logging.DEBUG)
    standin.mode = mode
    provider = provider_factory(timeout=0.3)
    with pytest.raises(TurnUpstreamError, match=message) as info:
        await provider.get()
    assert_leaks_nothing(info.value, caplog)
    assert sum(provider.errors.values()) == 1


async def test_wrong_token_is_reported_with_a_hint(
    standin: CloudflareStandIn, provider_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(TurnUpstreamError, match="HTTP 401 .check the key id and API token") as info:
        await provider_factory(api_token="wrong-token").get()
    assert_leaks_nothing(info.value, caplog)
    assert "wrong-token" not in str(info.value)


async def test_unreachable_upstream(provider_factory: Factory, caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.services import free_port

    provider = provider_factory(base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(TurnUpstreamError, match="request failed .ConnectError") as info:
        await provider.get()
    assert_leaks_nothing(info.value, caplog)


async def test_failure_waits_out_a_backoff_before_asking_again(
    standin: CloudflareStandIn, provider_factory: Factory
) -> None:
    standin.mode = "error"
    provider = provider_factory(failure_backoff=30.0)
    with pytest.raises(TurnUpstreamError, match="HTTP 500"):
        await provider.get()
    with pytest.raises(TurnUpstreamError, match="retrying shortly"):
        await provider.get()
    assert len(standin.generate_requests()) == 1


async def test_stale_credential_is_served_while_upstream_fails(
    standin: CloudflareStandIn, provider_factory: Factory
) -> None:
    now = [1_000_000.0]
    provider = provider_factory(ttl=100, clock=lambda: now[0], failure_backoff=5.0)
    assert (await provider.get()).username == "cf-user-1"

    standin.mode = "error"
    now[0] += 60  # past half-life: a refresh is due, and it fails
    stale = await provider.get()
    assert stale.username == "cf-user-1"
    assert stale.ttl == 40
    now[0] += 20  # less than a quarter of the life left: no longer good enough to hand out
    with pytest.raises(TurnUpstreamError, match="HTTP 500"):
        await provider.get()

    standin.mode = "ok"
    now[0] += 10
    assert (await provider.get()).username == "cf-user-2"


async def test_revoke_posts_to_the_revoke_url_and_drops_the_cached_credential(
    standin: CloudflareStandIn, provider_factory: Factory
) -> None:
    provider = provider_factory()
    creds = await provider.get()
    await provider.revoke(creds.username)

    revoke = standin.requests[-1]
    assert revoke.path == f"/v1/turn/keys/{KEY_ID}/credentials/cf-user-1/revoke"
    assert revoke.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert standin.revoked == ["cf-user-1"]
    assert (await provider.get()).username == "cf-user-2"


async def test_revoke_failure_is_an_upstream_error(provider_factory: Factory, caplog) -> None:
    with pytest.raises(TurnUpstreamError, match="HTTP 401") as info:
        await provider_factory(api_token="wrong-token").revoke("cf-user-1")
    assert_leaks_nothing(info.value, caplog)


def test_missing_key_or_token_is_a_config_error() -> None:
    with pytest.raises(TurnConfigError, match="FLEET_TURN_CLOUDFLARE_KEY_ID"):
        CloudflareProvider("", "token")
    with pytest.raises(TurnConfigError, match="FLEET_TURN_CLOUDFLARE_API_TOKEN"):
        CloudflareProvider("key", "")
