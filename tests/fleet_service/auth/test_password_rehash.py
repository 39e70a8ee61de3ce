"""Dashboard passwords are hashed at OWASP's scrypt cost, and a hash made at an older cost is replaced on login.

The new hash is stored only after the password matched, only over the hash it replaces (a password changed in the
meantime wins), and without ending sessions or moving `password_changed_at`. An unknown username costs a hash at
the password cost too, so a miss takes as long as a wrong password. The suite lowers the cost
(FLEET_PASSWORD_HASH_COST in tests/conftest.py); these tests run at the real one unless they set it themselves.
"""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, select

import fleet_service.auth.users
from fleet_service.auth.models import User
from protocol.secrets import PASSWORD_COST, SECRET_COST, Cost, cost_of, hash_password, hash_secret, verify_secret
from tests.support.auth import add_user, login
from tests.support.stack import StackThread, settings_for

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("rehash"), auth_failures_per_user=50, auth_failures_per_source=100)
    with StackThread(settings) as st:
        yield st


@pytest.fixture(autouse=True)
def real_cost(monkeypatch):
    monkeypatch.delenv("FLEET_PASSWORD_HASH_COST", raising=False)


def stored(stack: StackThread, username: str) -> User:
    with Session(stack.ctx.engine, expire_on_commit=False) as s:
        return s.exec(select(User).where(User.username == username)).one()


def store_hash(stack: StackThread, username: str, password_hash: str) -> None:
    with Session(stack.ctx.engine) as s:
        s.exec(update(User).where(User.username == username).values(password_hash=password_hash))
        s.commit()


def login_status(stack: StackThread, username: str, password: str, source: str = "127.0.0.1") -> int:
    with httpx.Client(base_url=stack.url, timeout=15, transport=httpx.HTTPTransport(local_address=source)) as c:
        return c.post("/api/auth/login", json={"username": username, "password": password}).status_code


def test_new_and_changed_passwords_are_stored_at_the_password_cost(stack):
    add_user(stack, "fresh", "viewer", PASSWORD)
    user = stored(stack, "fresh")
    assert cost_of(user.password_hash) == PASSWORD_COST and verify_secret(PASSWORD, user.password_hash)
    with stack.client() as api:
        r = api.patch("/api/users/fresh", json={"password": "another long password"})
        assert r.status_code == 200, r.text
    user = stored(stack, "fresh")
    assert cost_of(user.password_hash) == PASSWORD_COST and verify_secret("another long password", user.password_hash)


def test_an_old_cost_hash_is_replaced_on_login_and_sessions_stay(stack):
    add_user(stack, "veteran", "operator", PASSWORD)
    before = login(stack, "veteran", PASSWORD)  # a session from before the rehash
    old_hash = hash_secret(PASSWORD)  # what every hash was before the cost went up
    store_hash(stack, "veteran", old_hash)
    changed_at = stored(stack, "veteran").password_changed_at

    assert login_status(stack, "veteran", "wrong password!", source="127.0.0.2") == 401
    assert stored(stack, "veteran").password_hash == old_hash  # a wrong password rehashes nothing

    after = login(stack, "veteran", PASSWORD, local_address="127.0.0.3")
    user = stored(stack, "veteran")
    assert cost_of(user.password_hash) == PASSWORD_COST and user.password_hash != old_hash
    assert verify_secret(PASSWORD, user.password_hash)
    assert user.password_changed_at == changed_at
    for browser in (before, after):  # neither the old session nor the new one ended
        r = browser.client.get("/api/me")
        assert r.status_code == 200 and r.json()["name"] == "veteran", r.text
    assert login_status(stack, "veteran", PASSWORD, source="127.0.0.4") == 200
    assert stored(stack, "veteran").password_hash == user.password_hash  # at the current cost: left alone


def test_a_password_changed_during_the_rehash_wins(stack, monkeypatch):
    add_user(stack, "racer", "operator", PASSWORD)
    store_hash(stack, "racer", hash_secret(PASSWORD))
    real = fleet_service.auth.users.hash_password
    raced: list[str] = []

    def slow_rehash(password: str) -> str:
        if password == PASSWORD and not raced:  # the login's rehash: an admin changes the password meanwhile
            raced.append(password)
            assert fleet_service.auth.users.set_password(stack.ctx.engine, "racer", "changed by an admin")
        return real(password)

    monkeypatch.setattr(fleet_service.auth.users, "hash_password", slow_rehash)
    assert login_status(stack, "racer", PASSWORD, source="127.0.0.5") == 200
    assert raced
    user = stored(stack, "racer")
    assert verify_secret("changed by an admin", user.password_hash)
    assert not verify_secret(PASSWORD, user.password_hash)


def test_an_unknown_username_takes_as_long_as_a_wrong_password(stack):
    add_user(stack, "timed", "viewer", PASSWORD)
    store_hash(stack, "timed", hash_password(PASSWORD))  # a current hash, whatever made the user

    def duration(username: str) -> float:
        start = time.perf_counter()
        assert login_status(stack, username, "not the password", source="127.0.0.6") == 401
        return time.perf_counter() - start

    duration("nobody-at-all")  # the first miss may also make the dummy hash
    duration("timed")
    pairs = [(duration("nobody-at-all"), duration("timed")) for _ in range(5)]  # in turns: load hits both alike
    unknown, known = (statistics.median(times) for times in zip(*pairs, strict=True))
    # The same cost either way (a hash at the old cost for unknown names took a quarter of the time or less).
    assert known / 2 < unknown < known * 2, (unknown, known)


def test_the_cost_setting_is_what_new_hashes_and_rehashes_use(stack, monkeypatch):
    monkeypatch.setenv("FLEET_PASSWORD_HASH_COST", "15")
    lowered = Cost(2**15, PASSWORD_COST.r, PASSWORD_COST.p)
    assert fleet_service.auth.users.password_cost() == lowered
    add_user(stack, "tuned", "viewer", PASSWORD)
    assert cost_of(stored(stack, "tuned").password_hash) == lowered
    store_hash(stack, "tuned", hash_secret(PASSWORD, SECRET_COST))
    assert login_status(stack, "tuned", PASSWORD, source="127.0.0.7") == 200
    assert cost_of(stored(stack, "tuned").password_hash) == lowered
    store_hash(stack, "tuned", higher := hash_password(PASSWORD))  # above the setting: never hashed down
    assert login_status(stack, "tuned", PASSWORD, source="127.0.0.7") == 200
    assert stored(stack, "tuned").password_hash == higher
    for bad in ("13", "19", "2**17", "x"):
        monkeypatch.setenv("FLEET_PASSWORD_HASH_COST", bad)
        with pytest.raises(ValueError, match="FLEET_PASSWORD_HASH_COST"):
            fleet_service.auth.users.password_cost()
