"""MQTT topic names (docs/protocol.md) and the per-unit ACL over them.

Every topic in the project is built or parsed here; nowhere else writes one.
"""

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ProtocolError
from protocol.ids import is_device_id

ROOT = "fleet"


class Kind(StrEnum):
    STATE = "state"
    HEARTBEAT = "heartbeat"
    METRICS = "metrics"
    LOGS = "logs"
    CMD = "cmd"
    CMD_RESULT = "cmd/result"
    CONFIG_DESIRED = "config/desired"
    CONFIG_REPORTED = "config/reported"
    RELAY_DOWN = "relay/down"
    RELAY_UP = "relay/up"
    ACK = "ack"


# What a unit publishes, and what it may subscribe to / receive.
UNIT_PUBLISHES = frozenset(
    {Kind.STATE, Kind.HEARTBEAT, Kind.METRICS, Kind.LOGS, Kind.CMD_RESULT, Kind.CONFIG_REPORTED, Kind.RELAY_UP}
)
UNIT_RECEIVES = frozenset({Kind.CMD, Kind.CONFIG_DESIRED, Kind.RELAY_DOWN, Kind.ACK})
_BY_SUFFIX = {k.value: k for k in Kind}


@dataclass(frozen=True)
class Topic:
    device_id: str
    kind: Kind

    def __str__(self) -> str:
        return f"{ROOT}/{self.device_id}/{self.kind.value}"


def topic(device_id: str, kind: Kind) -> str:
    if not is_device_id(device_id):
        raise ProtocolError(f"invalid device id {device_id!r} in topic")
    return str(Topic(device_id, kind))


def parse(name: str) -> Topic:
    """Split `fleet/{id}/{kind}`; raise ProtocolError for anything else."""
    parts = name.split("/", 2)
    if len(parts) != 3 or parts[0] != ROOT:
        raise ProtocolError(f"not a fleet topic: {name!r}")
    _, device_id, suffix = parts
    kind = _BY_SUFFIX.get(suffix)
    if kind is None or not is_device_id(device_id):
        raise ProtocolError(f"not a fleet topic: {name!r}")
    return Topic(device_id, kind)


# Service-only family `fleet/_events/{replica}`: replicas share live events through the broker. `_events` can never
# be a device id (leading underscore), so parse() rejects these topics and no unit ACL can ever grant them.
EVENTS = "_events"
REPLICA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def events_topic(replica: str) -> str:
    """Where replica `replica` publishes its live events for the other replicas."""
    if not REPLICA_RE.fullmatch(replica):
        raise ProtocolError(f"invalid replica name {replica!r} in topic")
    return f"{ROOT}/{EVENTS}/{replica}"


def events_filter() -> str:
    """Every replica subscribes to this one without `$share`: each must see every other replica's events."""
    return f"{ROOT}/{EVENTS}/+"


def events_origin(name: str) -> str | None:
    """The publishing replica of an events topic, or None when `name` is not one."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == ROOT and parts[1] == EVENTS and REPLICA_RE.fullmatch(parts[2]):
        return parts[2]
    return None


def service_filters(shared_group: str | None = None) -> list[str]:
    """Subscriptions of the fleet service: everything units publish.

    With `shared_group`, replicas share the ingest topics; relay messages stay unshared because every
    replica must see them to reach the controllers connected to it.
    """
    ingest = sorted((k for k in UNIT_PUBLISHES if k is not Kind.RELAY_UP), key=lambda k: k.value)
    filters = [f"{ROOT}/+/{k.value}" for k in ingest]
    if shared_group:
        filters = [f"$share/{shared_group}/{f}" for f in filters]
    return [*filters, f"{ROOT}/+/{Kind.RELAY_UP.value}"]


def unit_may_publish(device_id: str, name: str) -> bool:
    term = parse_term(name)
    if term is not None:
        return term.device_id == device_id and term.direction == TERM_UP
    try:
        t = parse(name)
    except ProtocolError:
        return False
    return t.device_id == device_id and t.kind in UNIT_PUBLISHES


def unit_may_subscribe(device_id: str, topic_filter: str) -> bool:
    """Only exact own receive topics, and the one filter of its own sessions' downlinks: no other wildcard, no
    other unit, no `$` topics."""
    if is_device_id(device_id) and topic_filter == term_down_filter(device_id):
        return True
    if "+" in topic_filter or "#" in topic_filter:
        return False
    try:
        t = parse(topic_filter)
    except ProtocolError:
        return False
    return t.device_id == device_id and t.kind in UNIT_RECEIVES


def unit_may_receive(device_id: str, name: str) -> bool:
    """What a unit is delivered: its own receive topics and the downlinks of its own sessions."""
    term = parse_term(name)
    if term is not None:
        return term.device_id == device_id and term.direction == TERM_DOWN
    return unit_may_subscribe(device_id, name)


# Remote sessions (terminal; later forwarded streams): `fleet/{id}/term/{session}/down` (service -> unit) and
# `.../up` (unit -> service). The unit subscribes to `fleet/{id}/term/+/down`, the only wildcard it is allowed; the
# replica that holds a session's WebSocket subscribes to that session's `up` topic alone, without `$share`.
TERM = "term"
TERM_DOWN = "down"
TERM_UP = "up"
SESSION_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class TermTopic:
    device_id: str
    session: str
    direction: str  # TERM_DOWN or TERM_UP

    def __str__(self) -> str:
        return f"{ROOT}/{self.device_id}/{TERM}/{self.session}/{self.direction}"


def is_session_id(value: str) -> bool:
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None


def term_topic(device_id: str, session: str, direction: str) -> str:
    if not is_device_id(device_id):
        raise ProtocolError(f"invalid device id {device_id!r} in topic")
    if not is_session_id(session):
        raise ProtocolError(f"invalid session id {session!r}: 32 lowercase hex digits")
    if direction not in (TERM_DOWN, TERM_UP):
        raise ProtocolError(f"a session topic ends in down or up, not {direction!r}")
    return str(TermTopic(device_id, session, direction))


def term_down_filter(device_id: str) -> str:
    """What a unit subscribes to for its sessions."""
    return f"{ROOT}/{device_id}/{TERM}/+/{TERM_DOWN}"


def parse_term(name: str) -> TermTopic | None:
    """The parts of a session topic, or None when `name` is not one."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[2] != TERM or parts[4] not in (TERM_DOWN, TERM_UP):
        return None
    if not is_device_id(parts[1]) or not is_session_id(parts[3]):
        return None
    return TermTopic(parts[1], parts[3], parts[4])


def service_may_access(name: str) -> bool:
    """The service account may publish/subscribe anything under `fleet/` (shared too)."""
    if name.startswith("$share/"):
        parts = name.split("/", 2)
        name = parts[2] if len(parts) == 3 else ""
    return name == ROOT or name.startswith(ROOT + "/")
