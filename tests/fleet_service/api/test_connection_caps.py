"""Connection caps over real sockets: event streams and relay sockets per credential, a global
connection cap, and a deadline for receiving a request (slowloris)."""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.services import wait_for
from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for
from tests.support.unit import RawUnit

STREAMS = 3
SOCKETS = 2
READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = settings_for(
        tmp_path_factory.mktemp("caps"),
        events_streams_per_identity=STREAMS,
        relay_sockets_per_identity=SOCKETS,
        http_read_timeout_s=READ_TIMEOUT_S,
        http_max_connections=MAX_CONNECTIONS,
    )
    with StackThread(settings) as stack:
        wait_for(lambda: stack.ctx.link.connected.is_set(), timeout=30, what="broker link")
        yield stack


def _token(stack, role: str = "viewer") -> str:
    with stack.client() as api:
        return api.post("/api/tokens", json={"role": role}).json()["token"]


def _open_stream(stack, exits: ExitStack, token: str) -> httpx.Response:
    client = exits.enter_context(
        httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    )
    response = exits.enter_context(client.stream("GET", "/api/events"))
    if response.status_code == 200:
        response.chunks = response.iter_text()  # kept: a dropped iterator closes the response
        assert next(response.chunks).startswith("retry:")  # the stream is really open
    else:
        response.read()
    return response


def test_one_credential_gets_at_most_n_event_streams_and_a_slot_comes_back_when_one_closes(stack):
    token, other = _token(stack), _token(stack)
    with ExitStack() as exits:
        opened = [_open_stream(stack, exits, token) for _ in range(STREAMS)]
        assert [r.status_code for r in opened] == [200] * STREAMS
        refused = _open_stream(stack, exits, token)
        assert refused.status_code == 429, refused.text
        assert f"at most {STREAMS} event streams" in refused.json()["detail"]
        assert refused.headers["retry-after"]
        assert _open_stream(stack, exits, other).status_code == 200  # another credential is not affected

        with ExitStack() as one:
            extra_client = one.enter_context(
                httpx.Client(base_url=stack.url, timeout=10, headers={"Authorization": f"Bearer {other}"})
            )
            assert extra_client.get("/api/devices").status_code == 200  # plain requests are not streams
    # All closed: the credential has its streams back.
    with ExitStack() as exits:
        wait_for(
            lambda: stack.running.app.state.event_streams.held(f"token:{_name(stack, token)}") == 0,
            what="stream slots released",
        )
        assert [_open_stream(stack, exits, token).status_code for _ in range(STREAMS)] == [200] * STREAMS


def _name(stack, token: str) -> str:
    return stack.ctx.auth.bearer(token).name


def test_one_credential_gets_at_most_n_relay_sockets(stack):
    with stack.client() as api:
        secret = api.post("/api/devices", json={"id": "caps-1"}).json()["secret"]
    unit = RawUnit(stack.mqtt_port, "caps-1", secret).connect()
    unit.birth()
    with stack.client() as api:
        wait_for(lambda: api.get("/api/devices/caps-1").json()["online"], what="unit online")
    token = _token(stack, "operator")
    url = stack.url.replace("http://", "ws://") + "/api/devices/caps-1/relay"
    headers = {"Authorization": f"Bearer {token}"}
    with ExitStack() as exits:
        for _ in range(SOCKETS):
            exits.enter_context(connect(url, additional_headers=headers, open_timeout=10))
        with stack.client() as api:
            wait_for(lambda: api.get("/api/relay/health").json()["controllers"] == SOCKETS, what="controllers")
        with connect(url, additional_headers=headers, open_timeout=10) as ws, pytest.raises(ConnectionClosed) as c:
            ws.recv(timeout=5)
        assert c.value.rcvd.code == 4429
        assert f"at most {SOCKETS} relay connections" in c.value.rcvd.reason
        # another credential still gets one
        with connect(url, additional_headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, open_timeout=10) as ws:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=0.5)
    with connect(url, additional_headers=headers, open_timeout=10) as ws, pytest.raises(TimeoutError):
        ws.recv(timeout=0.5)  # the closed ones gave their slots back
    unit.kill()


def _raw(stack) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(stack.url.rsplit(":", 1)[1])), timeout=10)


def _closed_after(sock: socket.socket, trickle: bytes = b"", limit_s: float = 4 * READ_TIMEOUT_S + 2) -> float:
    """Seconds until the server closes `sock`, sending `trickle` a byte at a time meanwhile; inf past limit_s."""
    start = time.monotonic()
    sock.settimeout(0.25)
    position = 0
    while time.monotonic() - start < limit_s:
        if position < len(trickle):
            try:
                sock.send(trickle[position : position + 1])
            except OSError:
                return time.monotonic() - start
            position += 1
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return float("inf")


def test_a_slowloris_and_a_silent_connection_are_closed_within_the_read_timeout(stack):
    slow_head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    with _raw(stack) as sock:
        assert _closed_after(sock, slow_head) <= READ_TIMEOUT_S + 1.5
    with _raw(stack) as sock:  # connects and sends nothing at all
        assert _closed_after(sock) <= READ_TIMEOUT_S + 1.5
    # A slow body once the head is in: the same deadline
    with _raw(stack) as sock:
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        )
        assert _closed_after(sock, b"{" + b" " * 400) <= READ_TIMEOUT_S + 1.5


def test_requests_that_arrive_in_time_are_served_and_kept_alive_past_the_read_timeout(stack):
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
            time.sleep(READ_TIMEOUT_S / 2)
    # An event stream outlives the read deadline: only receiving the request is timed
    with ExitStack() as exits:
        response = _open_stream(stack, exits, ADMIN_TOKEN)
        time.sleep(READ_TIMEOUT_S * 2)
        with stack.client() as api:
            api.post("/api/devices", json={"id": "caps-2"})
        assert "caps-2" in next(response.chunks)
    # A WebSocket too
    with stack.client() as api:
        assert api.get("/api/relay/health").status_code == 200


def test_beyond_the_connection_cap_requests_get_503(stack):
    tokens = [_token(stack) for _ in range(MAX_CONNECTIONS // STREAMS + 2)]
    with ExitStack() as exits:
        statuses = [_open_stream(stack, exits, tokens[i // STREAMS]).status_code for i in range(MAX_CONNECTIONS + 2)]
        assert 503 in statuses, statuses
        assert statuses.index(503) <= MAX_CONNECTIONS  # the streams held every connection the cap allows
        assert set(statuses[statuses.index(503) :]) == {503}, statuses
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            assert client.get("/health").status_code == 503
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        wait_for(lambda: client.get("/health").status_code == 200, what="served again once connections closed")
