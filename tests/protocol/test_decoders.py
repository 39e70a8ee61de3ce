"""Every decoder of what units publish (and the agent's three) under hypothesis.

The contract of `protocol.payloads.decode`: input of any shape is a payload or a ProtocolError, nothing else (no
RecursionError, OverflowError, ValueError, UnicodeDecodeError ...); and whatever it accepts the service can store:
every integer fits 64 bits, every float is finite, every string is UTF-8, JSON nests at most MAX_DEPTH deep, and
the model re-encodes to JSON that decodes to an equal model. The last property drives the real ingest code: a unit
sending anything at all never costs another unit a stored record.

Seeded (derandomize, no example database), so CI runs the same examples every time.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from sqlalchemy import func, select

from fleet_service.db.engine import make_engine, migrate
from fleet_service.devices.enrollment import enroll
from fleet_service.devices.models import LogRecord as LogRow
from fleet_service.ingest.badlog import BadMessageLog
from fleet_service.ingest.persister import Inbound, Persister
from fleet_service.prometheus import Registry
from protocol.errors import ProtocolError
from protocol.ids import now_ms
from protocol.jsonload import INT_MAX, INT_MIN, MAX_DEPTH
from protocol.payloads import (
    COMMAND_NAMES,
    LOG_LEVELS,
    RESULT_STATUSES,
    SCHEMAS,
    Birth,
    Death,
    LogBatch,
    LogRecord,
    Payload,
    decode,
    encode,
)
from protocol.topics import Kind, topic

UNIT_KINDS = (Kind.STATE, Kind.HEARTBEAT, Kind.METRICS, Kind.LOGS, Kind.CMD_RESULT, Kind.CONFIG_REPORTED)
AGENT_KINDS = (Kind.CMD, Kind.CONFIG_DESIRED, Kind.ACK)
KINDS = pytest.mark.parametrize("kind", UNIT_KINDS + AGENT_KINDS, ids=str)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the contract, as assertions -------------------------------------------------------------------------------


def decode_or_refuse(kind: Kind, data: bytes | str) -> tuple[Payload | None, str | None]:
    """(payload, None) or (None, reason); any exception but ProtocolError fails the test."""
    try:
        return decode(kind, data), None
    except ProtocolError as exc:
        assert str(exc).strip(), f"a ProtocolError without a reason for {kind} {data[:80]!r}"
        return None, str(exc)


def storable_problems(payload: Payload) -> tuple[list[str], int]:
    """What a database or JSON encoder downstream would refuse in the payload's model_dump(), and how deep it nests
    (the top object is depth 1, as in protocol.jsonload)."""
    problems: list[str] = []
    deepest = 1
    stack: list[tuple[Any, int, str]] = [(payload.model_dump(), 1, type(payload).__name__)]
    while stack:
        node, depth, where = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            problems.append(f"{where} nests {depth} > {MAX_DEPTH} deep")
            continue
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            at = f"{where}.{key!r}"
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, at))
                continue
            for value in (key, child) if isinstance(node, dict) else (child,):
                if isinstance(value, bool) or value is None:
                    continue
                if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
                    problems.append(f"{at}: integer {value} does not fit 64 bits")
                elif isinstance(value, float) and not math.isfinite(value):
                    problems.append(f"{at}: float {value} is not finite")
                elif isinstance(value, str) and not _utf8(value):
                    problems.append(f"{at}: text {value[:40]!r} is not UTF-8 encodable")
                elif not isinstance(value, int | float | str):
                    problems.append(f"{at}: a {type(value).__name__} is no JSON value")
    return problems, deepest


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def assert_storable_and_round_trips(kind: Kind, payload: Payload) -> None:
    problems, depth = storable_problems(payload)
    assert not problems, problems
    target(depth, label="nesting of an accepted payload")  # steer generation towards MAX_DEPTH
    wire = encode(payload)
    again, reason = decode_or_refuse(kind, wire)
    assert reason is None, f"{kind}: the re-encoded payload is refused ({reason}): {wire[:300]!r}"
    assert again == payload
    assert encode(again) == wire


def check(kind: Kind, data: bytes | str) -> Payload | None:
    payload, _ = decode_or_refuse(kind, data)
    event("accepted" if payload is not None else "refused")
    if payload is not None:
        assert_storable_and_round_trips(kind, payload)
    return payload


def weighted(*options: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """one_of with weights: one_of flattens nested one_ofs into equally likely branches."""
    return st.sampled_from([strategy for weight, strategy in options for _ in range(weight)]).flatmap(lambda s: s)


# -- 1. arbitrary bytes ----------------------------------------------------------------------------------------

# Minimal valid objects: arbitrary bytes spliced into them, or arbitrary values put into their fields, reach the
# parser's and each field's checks instead of failing at the first byte.
TEMPLATES: dict[Kind, list[dict[str, Any]]] = {
    Kind.STATE: [{"v": 1, "online": True, "ts": 1, "session": "s"}, {"v": 1, "online": False}],
    Kind.HEARTBEAT: [{"v": 1, "ts": 1, "hostname": "h", "ips": ["10.0.0.1"]}],
    Kind.METRICS: [{"v": 1, "ts": 1, "cpu_percent": 1.5, "extra": {"a": "b"}}],
    Kind.LOGS: [{"v": 1, "records": [{"id": "a", "ts": 1, "msg": "m"}]}],
    Kind.CMD: [{"v": 1, "id": "c", "name": "ping", "ts": 1, "args": {"a": "b"}}],
    Kind.CMD_RESULT: [{"v": 1, "id": "c", "status": "running", "ts": 1, "output": "out"}],
    Kind.CONFIG_DESIRED: [{"v": 1, "version": 1, "config": {"a": "b"}}],
    Kind.CONFIG_REPORTED: [{"v": 1, "version": 1, "status": "applied", "error": "e"}],
    Kind.ACK: [{"v": 1, "ids": ["a"]}],
}


@st.composite
def spliced(draw, templates: st.SearchStrategy) -> bytes:
    """A valid payload with a few bytes replaced by arbitrary ones."""
    wire = draw(templates)
    start = draw(st.integers(0, len(wire)))
    end = draw(st.integers(start, min(len(wire), start + 4)))
    return wire[:start] + draw(st.binary(max_size=6)) + wire[end:]


def raw_bytes(kind: Kind) -> st.SearchStrategy:
    return st.one_of(
        st.binary(max_size=512),
        st.binary(max_size=256).map(lambda tail: b'{"v":1,' + tail),  # past the version check, into the parser's tail
        spliced(st.sampled_from([json.dumps(t).encode() for t in TEMPLATES[kind]])),
    )


RAW_BYTES = {kind: raw_bytes(kind) for kind in TEMPLATES}  # strategies are built once: building one costs more


@KINDS
@FUZZ
@given(data=st.data())
def test_arbitrary_bytes_are_a_payload_or_a_protocol_error(kind, data):
    check(kind, data.draw(RAW_BYTES[kind], label="payload"))


# -- 2. arbitrary JSON, written as text so it may hold what json.dumps never writes ---------------------------

FIELD_NAMES = sorted({name for model in (Birth, Death, LogRecord, *SCHEMAS.values()) for name in model.model_fields})
BIG_INTEGERS = ["9223372036854775808", "-9223372036854775809", "9" * 5000, "-" + "1" * 5000, "1" + "0" * 4300]
NUMBERS = [
    "-0",
    "-0.0",
    "0e-999999",
    "4.9e-324",
    "1.7976931348623157e308",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "1.0",
]  # fine, at the edges
NON_FINITE = ["1e999", "-1e999", "1E400", "2e308", "NaN", "Infinity", "-Infinity"]
# Lone surrogates (escaped, and as raw UTF-8 bytes / str characters below), a valid pair, NUL, an escaped backslash.
RAW_STRINGS = [
    '"\\ud800"',
    '"\\udfff"',
    '"a\\ud83d"',
    '"\\ude00b"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
    '"\\\\ud800"',
    '"123"',
    '"99999999999999999999999"',
    '"1e999"',
    '"NaN"',
    '"warn"',
    '"ERROR"',
    '"failed"',
    '"applied"',
    '"restart"',
    '""',
]
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])

plain_string = st.builds(
    lambda s, ascii_only: json.dumps(s, ensure_ascii=ascii_only), st.text(max_size=20), st.booleans()
)
odd_string = st.one_of(
    st.builds(  # lone surrogates escaped (\ud800) or raw (b"\xed\xa0\x80" on the wire, or a str's own character)
        json.dumps,
        st.text(weighted((1, SURROGATE), (1, st.characters())), min_size=1, max_size=4),
        ensure_ascii=st.booleans(),
    ),
    st.sampled_from(RAW_STRINGS),
)
json_string = st.one_of(plain_string, odd_string)
plain_leaf = st.one_of(
    st.sampled_from(["true", "false", "null"]),
    st.integers(INT_MIN, INT_MAX).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    plain_string,
)
# One bound each, equally likely: integers past 64 bits, numbers past a double (1e999 reads as inf), the constants,
# text that is no UTF-8.
odd_leaf = weighted(
    (1, st.integers(min_value=2**63 - 2, max_value=2**80).map(str) | st.sampled_from(BIG_INTEGERS)),
    (1, st.integers(min_value=-(2**80), max_value=-(2**63) + 2).map(str) | st.sampled_from(NUMBERS)),
    (1, st.sampled_from(NON_FINITE)),
    (1, odd_string),
)
json_leaf = weighted((1, plain_leaf), (1, odd_leaf))
json_key = st.one_of(st.sampled_from(FIELD_NAMES).map(json.dumps), json_string)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


def _nested(leaf: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5).map(_array), st.lists(st.tuples(json_key, inner), max_size=5).map(_object)
        ),
        max_leaves=15,
    )


json_value = _nested(json_leaf)
plain_value = _nested(plain_leaf)  # storable but for keys: what makes a field's value refused is its shape alone
_CLOSERS = {"[": "]", '{"a":': "}", '{"extra":': "}", '[{"x":': "}]"}
deep_value = st.builds(
    lambda n, opener, leaf: opener * n + leaf + _CLOSERS[opener] * n,
    st.one_of(st.integers(1, 2000), st.integers(MAX_DEPTH - 3, MAX_DEPTH + 2), st.sampled_from([1100, 2000])),
    st.sampled_from(sorted(_CLOSERS)),
    json_leaf,
)


def _fields(kind: Kind) -> list[str]:
    models = (Birth, Death) if kind is Kind.STATE else (SCHEMAS[kind],)
    return sorted({name for model in models for name in model.model_fields})


def _with(template: dict[str, Any], changes: list[tuple[str, str]]) -> str:
    """The template as JSON text, with some fields' values replaced by (or added as) raw JSON text."""
    changed = dict(changes)
    pairs = [(json.dumps(k), changed.pop(k) if k in changed else json.dumps(v)) for k, v in template.items()]
    return _object(pairs + [(json.dumps(k), v) for k, v in changed.items()])


# Exactly as deep as a payload may be: [[...]] as a field's value, the payload object around it.
at_the_limit = st.builds(
    lambda n, opener: opener * n + "1" + _CLOSERS[opener] * n,
    st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1]),
    st.sampled_from(["[", '{"a":']),
)
any_value = weighted(
    (3, plain_leaf), (3, plain_value), (2, odd_leaf), (1, json_value), (1, deep_value), (2, at_the_limit)
)
log_record = st.builds(  # the template's record with one or two fields replaced or added
    _with,
    st.just(TEMPLATES[Kind.LOGS][0]["records"][0]),
    st.lists(st.tuples(st.sampled_from(sorted(LogRecord.model_fields)), any_value), min_size=1, max_size=2),
)
document = st.lists(st.tuples(json_key, json_leaf), min_size=1, max_size=3).map(_object)
document = weighted(
    (3, document),
    (1, document.map(lambda d: _object([('"x"', _array([d]))]))),
    (1, at_the_limit),
    (1, st.builds(lambda n, leaf: '{"a":' * n + leaf + "}" * n, st.integers(MAX_DEPTH - 2, 2000), plain_leaf)),
)
text_list = st.lists(json_string, min_size=1, max_size=3).map(_array)
FREE_FORM: dict[Kind, dict[str, st.SearchStrategy]] = {
    Kind.STATE: {"session": json_string, "software_version": json_string},  # bounded text: refused by pydantic
    Kind.HEARTBEAT: {"ips": text_list, "hostname": json_string},
    Kind.METRICS: {
        "extra": document,
        "services": document,
        "unknown_key": weighted((1, json_leaf), (1, document)),
        "unknown_list": at_the_limit,  # kept in extra: one level deeper than it arrived
    },
    Kind.LOGS: {
        "records": weighted(
            (1, json_string.map(lambda msg: f'[{{"id":"a","ts":1,"msg":{msg}}}]')),
            (1, log_record.map(lambda record: f"[{record}]")),
        )
    },
    Kind.CMD: {"args": document},
    Kind.CMD_RESULT: {"output": json_string},
    Kind.CONFIG_DESIRED: {"config": document},
    Kind.CONFIG_REPORTED: {"config": document, "error": json_string},
    Kind.ACK: {
        "ids": text_list,
        "rejected": st.lists(st.tuples(json_string, json_string), min_size=1, max_size=3).map(_object),
    },
}


def filled_template(kind: Kind) -> st.SearchStrategy:
    """A template with one or two fields replaced or added: any value into any field, or bounds-breaking values
    into a field the models take as it comes (free-form documents and text), where only the parser guards them."""
    key = weighted((3, st.sampled_from(_fields(kind))), (1, st.text(max_size=6)))
    changes = st.lists(st.tuples(key, any_value), min_size=1, max_size=2)
    free = st.one_of([values.map(lambda v, name=name: [(name, v)]) for name, values in FREE_FORM[kind].items()])
    return st.builds(_with, st.sampled_from(TEMPLATES[kind]), weighted((2, changes), (1, free)))


def json_payload(kind: Kind) -> st.SearchStrategy:
    anything = st.one_of(
        json_value,
        deep_value,
        st.lists(st.tuples(json_key, st.one_of(json_value, deep_value)), max_size=8).map(
            lambda pairs: _object([('"v"', "1"), *pairs])
        ),
    )
    return weighted((1, anything), (2, filled_template(kind)))


# Sent as bytes (lone surrogates as the UTF-8 bytes json.loads passes through) or as str.
def json_wire(kind: Kind) -> st.SearchStrategy:
    return st.builds(
        lambda text, as_str: text if as_str else text.encode("utf-8", "surrogatepass"),
        json_payload(kind),
        st.booleans(),
    )


JSON_WIRE = {kind: json_wire(kind) for kind in TEMPLATES}


@KINDS
@FUZZ
@given(data=st.data())
def test_arbitrary_json_is_refused_or_storable_and_round_trips(kind, data):
    check(kind, data.draw(JSON_WIRE[kind], label="payload"))


# -- 3. near-valid payloads built from the schemas -------------------------------------------------------------

MISSING = object()
WRONG = st.sampled_from(
    [
        MISSING,
        None,
        True,
        False,
        "",
        "123",
        "99999999999999999999999",
        "1e999",
        "NaN",
        -1,
        1.5,
        2**63,
        -(2**63) - 1,
        10**14,
        [],
        {},
        [1],
        {"a": 1},
        "\ud800",
        "x" * 300,
        math.nan,
        math.inf,
    ]
)
json_native = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(INT_MIN, INT_MAX),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
TOO_DEEP: list = []
for _ in range(MAX_DEPTH):
    TOO_DEEP = [TOO_DEEP]  # MAX_DEPTH + 1 lists: too deep wherever it sits
BAD_DOCUMENT = st.dictionaries(
    st.text(max_size=5), st.sampled_from([math.nan, -math.inf, 2**64, "\ud800", TOO_DEEP]), min_size=1, max_size=2
)


@dataclass(frozen=True)
class F:
    """One field: values that are valid, whether it must be present, and near misses of its own."""

    good: st.SearchStrategy
    required: bool = False
    wrong: st.SearchStrategy | None = None


def numbers(ints: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(ints, ints.map(str))  # "123" is an integer too (lax mode)


LONE_SURROGATE = st.builds(lambda a, c, b: a + c + b, st.text(max_size=3), SURROGATE, st.text(max_size=3))


def text(limit: int | None = None, min_size: int = 0, required: bool = False) -> F:
    """A text field: valid text, or one too long or holding a lone surrogate."""
    too_long = st.nothing() if limit is None else st.text(min_size=limit + 1, max_size=limit + 3)
    return F(st.text(min_size=min_size, max_size=50 if limit is None else limit), required, too_long | LONE_SURROGATE)


TS = F(numbers(st.integers(0, 10**14 - 1)), True, st.sampled_from([10**14, -1, "100000000000000", 1e14]))
INT64 = F(
    st.one_of(st.none(), numbers(st.integers(INT_MIN, INT_MAX))),
    wrong=st.sampled_from(
        [str(INT_MAX + 1), str(INT_MIN - 1), "99999999999999999999999", 1e19, INT_MAX + 1, "9" * 5000]
    ),
)
COUNT = F(numbers(st.integers(0, INT_MAX)), wrong=st.sampled_from([str(INT_MAX + 1), "-1", -1, 1e19, INT_MAX + 1]))
FLOAT = F(
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(INT_MIN, INT_MAX)),
    wrong=st.sampled_from(["1e999", "-Infinity", "9" * 400, 1e308 * 10]),
)
ID = text(64, min_size=1, required=True)
ACK_ID = F(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True), wrong=st.sampled_from(["", "a b", "x" * 65]))
DOCUMENT = F(st.dictionaries(st.text(max_size=8), json_native, max_size=4), wrong=BAD_DOCUMENT)
LEVELS = [*LOG_LEVELS, "warn", "err", "crit", "fatal", "emerg", "alert", "trace", "WARN", "Info"]

V = F(st.just(1), True, st.sampled_from([2, 0, "1", 1.0, True]))
LOG_RECORD = {
    "id": ID,
    "ts": TS,
    "level": F(st.sampled_from(LEVELS), wrong=st.sampled_from(["loud", "", "warning!"])),
    "source": text(128),
    "msg": F(st.text(max_size=50) | st.just("m" * 9000), True, LONE_SURROGATE),
}
SPECS: dict[str, dict[str, F]] = {
    "birth": {
        "v": V,
        "online": F(st.just(True), True),
        "ts": TS,
        "session": text(64, min_size=1, required=True),
        "agent_version": text(64),
        "software_version": text(128),
        "boot_id": text(64),
    },
    "death": {"v": V, "online": F(st.just(False)), "session": text(64), "ts": INT64},
    Kind.HEARTBEAT: {
        "v": V,
        "ts": TS,
        "seq": COUNT,
        "uptime_s": F(
            st.floats(0, 1e12) | st.integers(0, INT_MAX), wrong=st.sampled_from(["1e999", "NaN", "-Infinity", -0.5])
        ),
        "hostname": text(255),
        "ips": F(st.lists(st.text(max_size=40), max_size=64), wrong=st.lists(LONE_SURROGATE)),
        "software_version": text(128),
        "agent_version": text(64),
    },
    Kind.METRICS: {
        "v": V,
        "ts": TS,
        "cpu_percent": FLOAT,
        "mem_percent": FLOAT,
        "mem_used_bytes": INT64,
        "disk_percent": FLOAT,
        "disk_free_bytes": INT64,
        "load1": FLOAT,
        "temp_c": FLOAT,
        "net_rx_bytes": INT64,
        "net_tx_bytes": INT64,
        "services": F(st.dictionaries(st.text(max_size=20), st.sampled_from(["active", "failed", "x"]), max_size=4)),
        "extra": DOCUMENT,
    },
    Kind.LOGS: {
        "v": V,
        "dropped": COUNT,
        "dropped_total": F(st.none() | COUNT.good, wrong=COUNT.wrong),
        "ack_id": ACK_ID,
    },  # "records" is added by near_valid (it nests near-valid records)
    Kind.CMD: {
        "v": V,
        "id": ID,
        "name": F(st.sampled_from(COMMAND_NAMES) | st.text(max_size=10), True),
        "args": DOCUMENT,
        "ts": TS,
        "expires_at": INT64,
    },
    Kind.CMD_RESULT: {
        "v": V,
        "id": ID,
        "status": F(st.sampled_from(RESULT_STATUSES), True),
        "exit_code": INT64,
        "output": F(st.text(max_size=50) | st.just("é" * 40_000), wrong=LONE_SURROGATE),
        "ts": TS,
        "ack_id": ACK_ID,
    },
    Kind.CONFIG_DESIRED: {
        "v": V,
        "version": F(COUNT.good, True, COUNT.wrong),
        "config": F(DOCUMENT.good, True, BAD_DOCUMENT),
    },
    Kind.CONFIG_REPORTED: {
        "v": V,
        "version": F(COUNT.good, True, COUNT.wrong),
        "status": F(st.sampled_from(["applied", "failed"]), True),
        "error": F(st.none() | st.text(max_size=30), wrong=LONE_SURROGATE),
        "config": DOCUMENT,
        "ack_id": ACK_ID,
    },
    Kind.ACK: {
        "v": V,
        "ids": F(st.lists(st.text(max_size=20), max_size=5), wrong=st.lists(LONE_SURROGATE)),
        "rejected": F(
            st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
            wrong=st.dictionaries(LONE_SURROGATE, LONE_SURROGATE, min_size=1, max_size=2),
        ),
    },
}


def near_valid(spec: dict[str, F], mutations: int = 2) -> st.SearchStrategy:
    """(valid, object): every field valid, or up to `mutations` of them replaced by a near miss or left out; plus
    unknown keys, which every model ignores or (metrics) keeps in `extra`."""
    broken_fields = st.sets(st.sampled_from(sorted(spec)), max_size=mutations)
    valid = {name: f.good if f.required else st.one_of(st.just(MISSING), f.good) for name, f in spec.items()}
    near_miss = {name: WRONG if f.wrong is None else weighted((1, WRONG), (3, f.wrong)) for name, f in spec.items()}
    unknown = st.dictionaries(st.text(max_size=10).filter(lambda k: k not in spec), json_native, max_size=3)

    @st.composite
    def build(draw) -> tuple[bool, dict[str, Any]]:
        broken = draw(broken_fields)
        obj: dict[str, Any] = {}
        for name in spec:
            value = draw(near_miss[name] if name in broken else valid[name])
            if value is not MISSING:
                obj[name] = value
        obj.update(draw(unknown))
        return not broken, obj

    return build()


LOGS_HEAD, LOG_RECORDS = near_valid(SPECS[Kind.LOGS]), st.lists(near_valid(LOG_RECORD, mutations=1), max_size=4)
NOT_RECORDS = WRONG.filter(lambda v: v is not MISSING and v != [])


@st.composite
def near_valid_logs(draw) -> tuple[bool, dict[str, Any]]:
    valid, obj = draw(LOGS_HEAD)
    records = draw(LOG_RECORDS)
    if draw(st.integers(0, 9)):  # a list of records, near-valid ones among them
        obj["records"] = [record for _, record in records]
        return valid and all(ok for ok, _ in records), obj
    if draw(st.booleans()):
        obj["records"] = draw(NOT_RECORDS)
    return False, obj


NEAR_VALID = {kind: near_valid(spec) for kind, spec in SPECS.items() if isinstance(kind, Kind)}
NEAR_VALID[Kind.STATE] = st.one_of(near_valid(SPECS["birth"]), near_valid(SPECS["death"]))
NEAR_VALID[Kind.LOGS] = near_valid_logs()


def to_wire(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()  # ensure_ascii: a lone surrogate goes out as \ud800, NaN as NaN, 2**64 as digits


@KINDS
@FUZZ
@given(data=st.data())
def test_schema_near_misses_round_trip_or_are_refused_with_a_reason(kind, data):
    valid, obj = data.draw(NEAR_VALID[kind], label="payload")
    wire = to_wire(obj)
    payload, reason = decode_or_refuse(kind, wire)
    event(f"{'valid' if valid else 'near miss'}: {'accepted' if payload is not None else 'refused'}")
    if valid:
        assert payload is not None, f"{kind}: a valid payload is refused ({reason}): {wire[:300]!r}"
    if payload is not None:
        assert_storable_and_round_trips(kind, payload)


# -- 4. the real ingest: one unit's garbage never costs another unit's records ---------------------------------

GOOD, BAD = "good-unit", "bad-unit"


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('ingest') / 'fleet.db'}")
    migrate(engine)
    enroll(engine, GOOD)
    enroll(engine, BAD)
    registry = Registry()
    yield Persister(engine, registry, BadMessageLog(registry)), engine
    engine.dispose()


_serial = itertools.count()


def good_batch(size: int) -> tuple[Inbound, str, int]:
    """A log batch of `size` new records, as the agent encodes it: (message, ack id, records)."""
    n = next(_serial)
    records = [LogRecord(id=f"r{n}-{i}", ts=now_ms(), level="info", source="app", msg=f"line {i}") for i in range(size)]
    ack_id = f"good-{n}"
    message = Inbound(topic(GOOD, Kind.LOGS), encode(LogBatch(records=records, ack_id=ack_id)), now_ms())
    return message, ack_id, size


def bad_message(kind_and_payload: tuple[Kind, bytes | str]) -> Inbound:
    kind, data = kind_and_payload
    wire = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return Inbound(topic(BAD, kind), wire, now_ms())


def unit_payload(kind: Kind) -> st.SearchStrategy:
    return weighted((1, RAW_BYTES[kind]), (2, JSON_WIRE[kind]), (2, NEAR_VALID[kind].map(lambda v: to_wire(v[1]))))


# Any kind from the bad unit; half of them log batches whose records hold any text or value (what reaches log_record).
poisoned_logs = FREE_FORM[Kind.LOGS]["records"].map(lambda records: _with({"v": 1}, [("records", records)]))
bad_messages = st.lists(
    weighted(
        (1, st.one_of([st.tuples(st.just(kind), unit_payload(kind)) for kind in UNIT_KINDS])),
        (1, st.tuples(st.just(Kind.LOGS), poisoned_logs)),
    ).map(bad_message),
    min_size=1,
    max_size=8,
)


def stored_records(engine, device_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(LogRow).where(LogRow.device_id == device_id)).scalar_one()


@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_a_bad_unit_never_costs_a_good_unit_its_records(ingest, data):
    persister, engine = ingest
    good = [good_batch(size) for size in data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3), label="good")]
    batch = data.draw(st.permutations([*(m for m, _, _ in good), *data.draw(bad_messages, label="bad")]), label="order")
    before = stored_records(engine, GOOD)

    result = persister.persist(batch)  # must not raise, whatever the bad unit sent

    assert stored_records(engine, GOOD) == before + sum(size for _, _, size in good)
    acks = result.acks.units[GOOD]
    assert sorted(acks.ids) == sorted(ack_id for _, ack_id, _ in good) and not acks.rejected
