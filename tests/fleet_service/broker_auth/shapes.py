"""The three shapes clustered brokers ask /api/broker-auth/... in, each read the way that broker reads the answer.

Each shape turns "may this client log in / publish / subscribe" into the HTTP call its broker makes and reads the
answer by that broker's rules: EMQX by `result` in a 200 body, go-auth by the status (200 allows, any other denies),
VerneMQ by `result == "ok"` (and, for a subscribe, no filter answered with qos 128).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import httpx

from tests.support.auth import bearer
from tests.support.stack import StackThread

TOKEN = "broker-shared-token-0123456789abcdefghijkl"
SERVICE_SECRET = "service-account-secret-0123456789abcdef"
_ports = itertools.count(40000)


@dataclass
class Shape:
    name: str
    url: str
    token: str = TOKEN
    peer: str = "10.9.0.1"
    form: bool = False  # go-auth only: its `form` params mode
    last: httpx.Response | None = field(default=None, repr=False)

    def post(self, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
        hdrs = {**bearer(self.token), **(headers or {})}
        if self.form:
            r = httpx.post(self.url + path, data={k: str(v) for k, v in body.items()}, headers=hdrs, timeout=15)
        else:
            r = httpx.post(self.url + path, json=body, headers=hdrs, timeout=15)
        self.last = r
        return r

    def login(self, username: str | None, password: str | None, client_id: str | None = None) -> bool:
        client_id = username if client_id is None else client_id
        if self.name == "emqx":
            r = self.post(
                "/api/broker-auth/emqx/authn",
                {"username": username, "password": password, "clientid": client_id, "peerhost": self.peer},
            )
            assert r.status_code == 200, r.text
            return r.json()["result"] == "allow"
        if self.name == "go-auth":
            body = {"username": username or "", "password": password or "", "clientid": client_id or ""}
            r = self.post("/api/broker-auth/go-auth/user", body)
            assert r.status_code in (200, 403), r.text
            return r.status_code == 200
        r = self.post(
            "/api/broker-auth/vernemq/register",
            {
                "peer_addr": self.peer,
                "peer_port": next(_ports),
                "username": username,
                "password": password,
                "mountpoint": "",
                "client_id": client_id,
                "clean_session": True,
            },
            {"vernemq-hook": "auth_on_register"},
        )
        assert r.status_code == 200, r.text
        return r.json()["result"] == "ok"

    def superuser(self, username: str, password: str) -> bool:
        """Whether the broker would skip topic checks for this client."""
        if self.name == "emqx":
            r = self.post(
                "/api/broker-auth/emqx/authn", {"username": username, "password": password, "clientid": "svc"}
            )
            return r.json() == {"result": "allow", "is_superuser": True}
        if self.name == "go-auth":
            assert self.login(username, password, "svc")
            return self.post("/api/broker-auth/go-auth/superuser", {"username": username}).status_code == 200
        return False  # VerneMQ has no superusers: every publish and subscribe is asked

    def publish(self, username: str, topic: str, client_id: str | None = None) -> bool:
        client_id = username if client_id is None else client_id
        if self.name == "emqx":
            body = {"username": username, "clientid": client_id, "topic": topic, "action": "publish", "qos": "1"}
            r = self.post("/api/broker-auth/emqx/authz", body)
            assert r.status_code == 200, r.text
            return r.json()["result"] == "allow"
        if self.name == "go-auth":
            body = {"username": username, "clientid": client_id, "topic": topic, "acc": 2}
            return self.post("/api/broker-auth/go-auth/acl", body).status_code == 200
        body = {
            "username": username,
            "client_id": client_id,
            "mountpoint": "",
            "qos": 1,
            "topic": topic,
            "payload": "e30=",
            "retain": False,
        }
        r = self.post("/api/broker-auth/vernemq/publish", body, {"vernemq-hook": "auth_on_publish"})
        assert r.status_code == 200, r.text
        return r.json()["result"] == "ok"

    def subscribe(self, username: str, topic_filter: str, client_id: str | None = None) -> bool:
        client_id = username if client_id is None else client_id
        if self.name == "emqx":
            body = {"username": username, "clientid": client_id, "topic": topic_filter, "action": "subscribe"}
            r = self.post("/api/broker-auth/emqx/authz", body)
            assert r.status_code == 200, r.text
            return r.json()["result"] == "allow"
        if self.name == "go-auth":
            sub = {"username": username, "clientid": client_id, "topic": topic_filter, "acc": 4}
            read = {**sub, "acc": 1}  # Mosquitto asks again, per message, before delivering it
            allowed = self.post("/api/broker-auth/go-auth/acl", sub).status_code == 200
            delivered = self.post("/api/broker-auth/go-auth/acl", read).status_code == 200
            assert allowed == delivered or "+" in topic_filter or "#" in topic_filter
            return allowed
        body = {
            "username": username,
            "client_id": client_id,
            "mountpoint": "",
            "topics": [{"topic": topic_filter, "qos": 1}],
        }
        r = self.post("/api/broker-auth/vernemq/subscribe", body, {"vernemq-hook": "auth_on_subscribe"})
        assert r.status_code == 200, r.text
        answer = r.json()
        if answer["result"] != "ok":
            return False
        return all(t["qos"] != 128 for t in answer.get("topics", []))


SHAPES = ("emqx", "go-auth", "go-auth-form", "vernemq")


def shape(name: str, url: str, **kw) -> Shape:
    if name == "go-auth-form":
        return Shape("go-auth", url, form=True, **kw)
    return Shape(name, url, **kw)


def enroll(stack: StackThread, device_id: str) -> str:
    with stack.client() as api:
        r = api.post("/api/devices", json={"id": device_id})
        assert r.status_code == 201, r.text
        return r.json()["secret"]
