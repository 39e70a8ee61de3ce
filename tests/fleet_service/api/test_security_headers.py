"""Security headers on every answer and the OpenAPI documentation behind a login, over real
HTTP."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from tests.support.services import wait_for
from tests.support.stack import StackThread, settings_for

DOCS = ("/docs", "/redoc", "/openapi.json")
USER = ("dana", "dana-password-1")


def _stack(tmp_path, **overrides) -> StackThread:
    return StackThread(settings_for(tmp_path, **overrides))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with _stack(tmp_path_factory.mktemp("headers")) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="broker link")
        with stack.client() as api:
            r = api.post("/api/users", json={"username": USER[0], "password": USER[1], "role": "viewer"})
            assert r.status_code == 201, r.text
        yield stack


def _directives(csp: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in csp.split(";")) if part}


@pytest.mark.parametrize(
    "path,status",
    [
        ("/", 200),
        ("/index.html", 200),
        ("/app.js", 200),
        ("/style.css", 200),
        ("/health", 200),
        ("/api/devices", 401),
        ("/no-such-file", 404),
        ("/api/me", 401),
    ],
)
def test_every_answer_carries_the_security_headers(stack, path, status):
    r = httpx.get(stack.url + path, timeout=10)
    assert r.status_code == status
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = _directives(r.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'"]  # no inline script
    # inline styles (xterm.js's run-time <style> elements) but nothing that could carry data to another origin
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]
    assert csp["img-src"] == ["'self'", "data:"] and csp["font-src"] == ["'self'"] and csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert csp["default-src"] == ["'self'"] and csp["base-uri"] == ["'none'"]


def test_authenticated_answers_and_event_streams_carry_them_too(stack):
    with stack.client() as api:
        assert api.get("/api/devices").headers["x-frame-options"] == "DENY"
        with api.stream("GET", "/api/events") as r:
            assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        r = api.post("/api/devices", json={"id": "BAD ID"})
        assert r.status_code == 422 and "content-security-policy" in r.headers


def test_docs_need_a_credential_by_default(stack):
    for path in DOCS:
        r = httpx.get(stack.url + path, timeout=10)
        assert r.status_code == 401, (path, r.status_code)
    with stack.client() as api:
        schema = api.get("/openapi.json")
        assert schema.status_code == 200 and "/api/devices" in schema.json()["paths"]
        for path in ("/docs", "/redoc"):
            assert api.get(path).status_code == 200
    # a dashboard user's session cookie is a credential too
    with httpx.Client(base_url=stack.url, timeout=10) as browser:
        r = browser.post("/api/auth/login", json={"username": USER[0], "password": USER[1]})
        assert r.status_code == 200, r.text
        for path in DOCS:
            assert browser.get(path).status_code == 200, path


def test_the_docs_pages_allow_their_own_inline_script_by_hash_only(stack):
    with stack.client() as api:
        page = api.get("/docs")
    scripts = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert len(scripts) == 1 and "SwaggerUIBundle" in scripts[0]
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = _directives(page.headers["content-security-policy"])
    assert f"'sha256-{digest}'" in csp["script-src"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["connect-src"] == ["'self'"]
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("mode,anonymous,token", [("off", 404, 404), ("public", 200, 200)])
def test_docs_can_be_switched_off_or_made_public(tmp_path, mode, anonymous, token):
    with _stack(tmp_path, api_docs=mode) as stack, stack.client() as api:
        for path in DOCS:
            assert httpx.get(stack.url + path, timeout=10).status_code == anonymous, path
            assert api.get(path).status_code == token, path
        assert api.get("/api/devices").status_code == 200  # the API itself is unaffected
