"""What clustered brokers send to /api/broker-auth/... and what they are answered, in each broker's own shape.

Requests ignore fields they do not name (brokers add fields between versions, and EMQX sends whatever its body
template holds); a field they need that is missing or of the wrong type is a 422. EMQX renders every placeholder
as a string, so numbers and flags are read from strings too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_service.api.schemas.common import Public

__all__ = [
    "EmqxAuthn",
    "EmqxAuthnAnswer",
    "EmqxAuthz",
    "EmqxAuthzAnswer",
    "GoAuthAcl",
    "GoAuthAnswer",
    "GoAuthSuperuser",
    "GoAuthUser",
    "VerneAnswer",
    "VerneError",
    "VernePublish",
    "VerneRegister",
    "VerneSubscribe",
    "VerneSubscribeAnswer",
    "VerneTopic",
    "VerneTopicAsked",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- EMQX 5: `authentication` and `authorization.sources` with backend/type http, method post, a JSON body


class EmqxAuthn(_Request):
    """Body template e.g. {username = "${username}", password = "${password}", clientid = "${clientid}", ...}."""

    username: str | None
    password: str | None
    clientid: str | None = None
    peerhost: str | None = None


class EmqxAuthnAnswer(Public):
    result: Literal["allow", "deny", "ignore"]
    is_superuser: bool


class EmqxAuthz(_Request):
    """Body template e.g. {username = "${username}", topic = "${topic}", action = "${action}", ...}."""

    username: str | None
    topic: str = Field(max_length=65535)
    action: Literal["publish", "subscribe"]
    clientid: str | None = None
    peerhost: str | None = None
    qos: int | None = Field(default=None, ge=0, le=2)
    retain: bool | None = None


class EmqxAuthzAnswer(Public):
    result: Literal["allow", "deny"]


# --- mosquitto-go-auth's HTTP backend: JSON (the default) or a form, answered by status (200 or 403)


class GoAuthUser(_Request):
    username: str
    password: str
    clientid: str = ""


class GoAuthSuperuser(_Request):
    username: str


class GoAuthAcl(_Request):
    username: str
    topic: str = Field(max_length=65535)
    clientid: str = ""
    acc: int = Field(ge=1, le=4, description="1 read (delivery), 2 write (publish), 3 both, 4 subscribe")


class GoAuthAnswer(Public):
    """Read by go-auth's `json` response mode; its `status` mode reads only the status code."""

    ok: bool
    error: str


# --- VerneMQ's webhooks (vmq_webhooks): auth_on_register, auth_on_publish, auth_on_subscribe


class VerneRegister(_Request):
    peer_addr: str | None = None
    peer_port: int | None = None
    username: str | None
    password: str | None
    mountpoint: str = ""
    client_id: str
    clean_session: bool | None = None


class VernePublish(_Request):
    username: str | None
    client_id: str
    mountpoint: str = ""
    qos: int = Field(ge=0, le=2)
    topic: str = Field(max_length=65535)
    payload: Any = None  # never read
    retain: bool = False


class VerneTopic(Public):
    topic: str = Field(max_length=65535)
    qos: int = Field(ge=0, le=128, description="0-2 as asked; 128 in an answer: this filter is refused")


class VerneTopicAsked(_Request):
    topic: str = Field(max_length=65535)
    qos: int = Field(ge=0, le=2)


class VerneSubscribe(_Request):
    username: str | None
    client_id: str
    mountpoint: str = ""
    topics: list[VerneTopicAsked] = Field(min_length=1, max_length=1000)


class VerneError(Public):
    error: str


class VerneAnswer(Public):
    result: Literal["ok"] | VerneError


class VerneSubscribeAnswer(Public):
    """`topics` only when some filter is refused: every filter asked, each refused one with qos 128."""

    result: Literal["ok"] | VerneError
    topics: list[VerneTopic] | None = None
