"""The agent's TURN fetcher against the real fleet service: file, refresh, caching, and the service's errors."""

from __future__ import annotations

import json
import logging
import stat
import time

import pytest

from agent.config import load_settings
from agent.errors import ConfigError
from agent.turn_fetch import FILE_MODE, TurnFetcher, TurnUnavailable
from tests.support.services import free_port, wait_for
from tests.support.stack import StackThread, settings_for

TURN_SECRET = "turn-secret-for-agent-tests"


def _service(tmp_path, monkeypatch, **env: str) -> StackThread:
    monkeypatch.setenv("FLEET_TURN_SECRETS", TURN_SECRET)
    monkeypatch.setenv("FLEET_TURN_URLS", "stun:127.0.0.1:3478,turn:127.0.0.1:3478?transport=udp")
    monkeypatch.setenv("FLEET_TURN_RATE_PER_MINUTE", "0")  # off unless a test sets it
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return StackThread(settings_for(tmp_path))


@pytest.fixture
def turn_service(tmp_path, monkeypatch):
    with _service(tmp_path, monkeypatch) as stack:
        yield stack


def _enroll(stack: StackThread, device_id: str = "rec-1") -> str:
    with stack.client() as api:
        r = api.post("/api/devices", json={"id": device_id})
        assert r.status_code == 201, r.text
        return r.json()["secret"]


def _fetcher(stack_url: str, tmp_path, secret: str, device_id: str = "rec-1", **overrides) -> TurnFetcher:
    values = dict(
        device_id=device_id,
        secret=secret,
        api_url=stack_url + "/",
        state_dir=tmp_path / "state",
        reconnect_min_delay=0.2,
        reconnect_max_delay=0.5,
    )
    values.update(overrides)
    return TurnFetcher(load_settings(None, **values))


def test_the_file_is_written_atomically_and_refreshed_at_half_the_ttl(turn_service, tmp_path):
    secret = _enroll(turn_service)
    path = tmp_path / "turn" / "turn.json"
    path.parent.mkdir()
    fetcher = _fetcher(turn_service.url, tmp_path, secret, turn_file=path, turn_ttl=2)
    fetcher.start()
    try:
        first = wait_for(lambda: path.exists() and json.loads(path.read_text()), what="TURN file")
        assert stat.S_IMODE(path.stat().st_mode) == FILE_MODE
        stun, turn = first["iceServers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        assert turn["username"] and turn["credential"] and first["expiresAt"].endswith("Z")
        assert 1 <= first["ttl"] <= 2  # the agent asked for --turn-ttl 2

        # Readers only ever see a whole file; a new credential appears before the old one expires.
        seen = {turn["username"]}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(seen) < 3:
            seen.add(json.loads(path.read_text())["iceServers"][1]["username"])
            time.sleep(0.02)
        assert len(seen) >= 3, seen
        assert [p.name for p in path.parent.iterdir()] == ["turn.json"]  # no temp files left behind
    finally:
        fetcher.stop()


def test_local_callers_get_the_cached_credentials_until_half_the_ttl(turn_service, tmp_path):
    secret = _enroll(turn_service)
    fetcher = _fetcher(turn_service.url, tmp_path, secret, turn_ttl=600)
    a = fetcher.get()
    b = fetcher.get()
    assert fetcher.fetches == 1 and a["iceServers"] == b["iceServers"]
    assert 598 <= b["ttl"] <= 600


def test_a_wrong_secret_is_reported_without_the_secret_and_not_retried_at_once(turn_service, tmp_path, caplog):
    _enroll(turn_service)
    fetcher = _fetcher(turn_service.url, tmp_path, "not-the-secret-1234", auth_retry_delay=30)
    with caplog.at_level(logging.DEBUG, "agent.turn_fetch"), pytest.raises(TurnUnavailable) as failed:
        fetcher.get()
    assert failed.value.status == 401 and "refused this unit's credentials" in str(failed.value)
    with pytest.raises(TurnUnavailable):
        fetcher.get()
    assert fetcher.fetches == 1  # backing off: a local caller does not turn into a request storm
    assert "not-the-secret-1234" not in caplog.text and "retrying in" in caplog.text


def test_turn_off_at_the_service_is_a_clear_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("FLEET_TURN_URLS", raising=False)
    with StackThread(settings_for(tmp_path)) as stack:
        secret = _enroll(stack)
        with pytest.raises(TurnUnavailable) as failed:
            _fetcher(stack.url, tmp_path, secret).get()
    assert failed.value.status == 503 and "FLEET_TURN_URLS" in str(failed.value)


def test_rate_limited_waits_at_least_retry_after(tmp_path, monkeypatch):
    env = {"FLEET_TURN_RATE_BURST": "1", "FLEET_TURN_RATE_PER_MINUTE": "1"}
    with _service(tmp_path, monkeypatch, **env) as stack:
        secret = _enroll(stack)
        assert _fetcher(stack.url, tmp_path, secret).get()["iceServers"]
        second = _fetcher(stack.url, tmp_path, secret)
        with pytest.raises(TurnUnavailable) as failed:
            second.get()
    assert failed.value.status == 429 and failed.value.retry_after and failed.value.retry_after >= 30
    assert "retry after" in str(failed.value)


def test_an_unreachable_service_is_reported(tmp_path):
    fetcher = _fetcher(f"http://127.0.0.1:{free_port()}", tmp_path, "s")
    with pytest.raises(TurnUnavailable) as failed:
        fetcher.get()
    assert "cannot reach the fleet service" in str(failed.value) and failed.value.status is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://fleet.example.com",
        "https://unit:secret@fleet.example.com",
        "https://fleet.example.com/?x=1",
        "fleet.example.com",
    ],
)
def test_api_url_must_be_a_plain_http_base_url(url, tmp_path):
    with pytest.raises(ConfigError, match="api_url"):
        load_settings(None, device_id="rec-1", api_url=url, state_dir=tmp_path)


def test_settings_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_API_URL", "https://fleet.example.com:8443/")
    monkeypatch.setenv("FLEET_TURN_FILE", str(tmp_path / "turn.json"))
    monkeypatch.setenv("FLEET_TURN_TTL", "900")
    monkeypatch.setenv("FLEET_RELAY_ORIGIN", "https://recorder.example,http://10.0.0.5:8080")
    s = load_settings(None, device_id="rec-1", state_dir=tmp_path)
    assert TurnFetcher(s).url == "https://fleet.example.com:8443/api/turn-credentials?ttl=900"
    assert s.turn_file == tmp_path / "turn.json" and s.relay_port == 8765
    assert s.relay_origin == ["https://recorder.example", "http://10.0.0.5:8080"]
    with pytest.raises(ConfigError, match="relay_origin"):
        load_settings(None, device_id="rec-1", state_dir=tmp_path, relay_origin=["recorder.example"])
    with pytest.raises(ConfigError, match="relay_port"):
        load_settings(None, device_id="rec-1", state_dir=tmp_path, relay_port=70000)
