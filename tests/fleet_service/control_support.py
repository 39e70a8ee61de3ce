"""Test helpers for the control plane: units that answer commands over MQTT, and an SSE reader over real HTTP."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from fleet_service.live.origins import decode
from protocol.ids import now_ms
from protocol.topics import Kind, topic
from tests.support.unit import RawUnit

# What a unit answers to a command: a list of (status, exit_code, output); empty = stay silent.
Policy = Callable[[dict[str, Any]], list[tuple[str, int | None, str]]]


def succeed(cmd: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return [("accepted", None, ""), ("running", None, ""), ("succeeded", 0, f"{cmd['name']} done")]


def fail(cmd: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return [("accepted", None, ""), ("running", None, ""), ("failed", 3, "health check failed; rolled back")]


def silent(cmd: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return []


class Responder:
    """A RawUnit subscribed to its `cmd` (and `config/desired`) topics; a thread answers commands by `policy`."""

    def __init__(
        self, port: int, device_id: str, secret: str, policy: Policy = succeed, *, config: bool = False
    ) -> None:
        self.unit = RawUnit(port, device_id, secret)
        self.device_id = device_id
        self.policy = policy
        self.commands: list[dict[str, Any]] = []  # every cmd message received, duplicates included
        self.configs: list[dict[str, Any]] = []  # every config/desired message received
        self._config = config
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"responder-{device_id}")
        self._stop = threading.Event()

    def start(self, birth: bool = True) -> Responder:
        self.unit.connect()
        self.unit.subscribe(Kind.CMD)
        if self._config:
            self.unit.subscribe(Kind.CONFIG_DESIRED)
        self._thread.start()
        if birth:  # after SUBSCRIBE on the same connection: the broker has the subscription when birth arrives
            self.unit.birth()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.unit.received.get(timeout=0.1)
            except queue.Empty:
                continue
            body = json.loads(msg.payload)
            if msg.topic == topic(self.device_id, Kind.CONFIG_DESIRED):
                self.configs.append(body)
                continue
            self.commands.append(body)
            if sum(1 for c in self.commands if c["id"] == body["id"]) > 1:
                continue  # a re-delivery: a real agent remembers ids and does not run it again
            for status, code, output in self.policy(body):
                self.result(body["id"], status, code, output)

    def result(self, cmd_id: str, status: str, exit_code: int | None = None, output: str = "") -> None:
        self.unit.publish(
            Kind.CMD_RESULT,
            {"v": 1, "id": cmd_id, "status": status, "exit_code": exit_code, "output": output, "ts": now_ms()},
        )

    def command_ids(self) -> list[str]:
        return list(dict.fromkeys(c["id"] for c in self.commands))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            self.unit.stop_clean()
        except Exception:  # noqa: BLE001 (already disconnected: nothing left to clean up)
            pass


def later(a: str, b: str) -> bool:
    """SSE id `a` is a position past `b`: as far in every origin's sequence, further in at least one."""
    pa, pb = decode(a), decode(b)
    assert pa is not None and pb is not None, (a, b)
    return pa != pb and all(pa.get(origin, 0) >= seq for origin, seq in pb.items())


def increasing(ids: list[str]) -> bool:
    return all(later(b, a) for a, b in zip(ids, ids[1:], strict=False))


class SseReader:
    """Reads `GET /api/events` with a real streaming httpx client on a thread; events land in `events`."""

    def __init__(self, base_url: str, token: str, *, last_event_id: str | None = None, params: dict | None = None):
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self._client = httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(30, read=None))
        self._params = params or {}
        self.events: list[dict[str, Any]] = []
        self.last_id: str | None = None  # as a browser keeps it: also from messages with an id and no data
        self.connected = threading.Event()
        self.status: int | None = None
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._read, daemon=True, name="sse-reader")

    def __enter__(self) -> SseReader:
        self._thread.start()
        if not self.connected.wait(10):
            raise AssertionError("the SSE stream did not open")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/api/events", params=self._params) as response:
                self._response = response
                self.status = response.status_code
                self.connected.set()
                event: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "id" in event:
                            self.last_id = event["id"]
                        if "data" in event:
                            with self._lock:
                                self.events.append(
                                    {
                                        "id": event.get("id"),
                                        "event": event.get("event"),
                                        "data": json.loads(event["data"]),
                                    }
                                )
                        event = {}
                    elif not line.startswith(":") and ":" in line:
                        key, _, value = line.partition(":")
                        event[key] = value[1:] if value.startswith(" ") else value
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test
        finally:
            self.connected.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10, what: str = "event"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.snapshot():
                if predicate(e):
                    return e
            time.sleep(0.05)
        seen = [(e["event"], e["data"].get("device_id")) for e in self.snapshot()][-30:]
        raise AssertionError(f"no {what} on the SSE stream within {timeout}s; last seen: {seen}")

    def close(self) -> None:
        """Hang up the way a browser does: the socket goes away (a blocked read on it returns at once)."""
        if self._response is not None:
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)
        self._client.close()
