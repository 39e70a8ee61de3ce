"""Operator identities for tests: users that log in like the dashboard does, and API tokens per role."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import httpx

from tests.support.stack import StackThread


@dataclass
class Browser:
    """An httpx client that behaves like the dashboard page: cookie jar plus the CSRF header on changes."""

    client: httpx.Client
    csrf_token: str
    username: str

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
            kw["headers"] = {"X-CSRF-Token": self.csrf_token, **kw.get("headers", {})}
        return self.client.request(method, url, **kw)


def add_user(stack: StackThread, username: str, role: str, password: str = "correct horse battery") -> str:
    with stack.client() as api:
        r = api.post("/api/users", json={"username": username, "password": password, "role": role})
        assert r.status_code == 201, r.text
    return password


def login(stack: StackThread, username: str, password: str, local_address: str | None = None) -> Browser:
    transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
    client = httpx.Client(base_url=stack.url, timeout=15, transport=transport)
    r = client.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return Browser(client, r.json()["csrf_token"], username)


def token_for(stack: StackThread, role: str, name: str = "") -> str:
    with stack.client() as api:
        r = api.post("/api/tokens", json={"role": role, "name": name or f"test-{role}"})
        assert r.status_code == 201, r.text
        return r.json()["token"]


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
