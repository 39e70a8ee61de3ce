"""Numbers in query parameters and headers are bounded: too big, negative or not ASCII digits is a 422 that names
the parameter, never a 500 from an integer the database cannot hold. SQLite and PostgreSQL, over real HTTP."""

from __future__ import annotations

import pytest

from tests.fleet_service.stack_on import stack_on
from tests.support.stack import StackThread

HUGE = "99999999999999999999"  # past a 64-bit integer
UNIT = "bounds-1"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    with stack_on(request.param, tmp_path_factory.mktemp("bounds")) as st:
        with st.client() as api:
            assert api.post("/api/devices", json={"id": UNIT}).status_code == 201
            r = api.post("/api/rollouts", json={"command": "ping", "device_ids": [UNIT]})
            assert r.status_code == 201, r.text
            st.rollout_id = r.json()["id"]
        yield st


def _refused(stack: StackThread, path: str, name: str, value: str, **kw) -> None:
    with stack.client() as api:
        r = api.get(path, params={name: value}, **kw)
    assert r.status_code == 422, (path, name, value, r.status_code, r.text)
    assert name in r.json()["detail"], r.json()


LISTS = ["/api/devices", f"/api/devices/{UNIT}/commands", "/api/rollouts", "/api/audit"]


@pytest.mark.parametrize("path", LISTS)
def test_offsets_are_bounded_on_every_list(stack, path):
    for value in (HUGE, str(10**9 + 1), "-1"):
        _refused(stack, path, "offset", value)
    with stack.client() as api:
        r = api.get(path, params={"offset": 10**9})  # the largest offset is an empty page, not an error
    assert r.status_code == 200 and r.json()["items"] == [], r.text


def test_the_offset_of_a_rollouts_units_is_bounded(stack):
    _refused(stack, f"/api/rollouts/{stack.rollout_id}", "offset", HUGE)
    with stack.client() as api:
        r = api.get(f"/api/rollouts/{stack.rollout_id}", params={"offset": 10**9})
    assert r.status_code == 200 and r.json()["units"] == [], r.text


TIMED = ["/api/audit", f"/api/devices/{UNIT}/logs", f"/api/devices/{UNIT}/metrics"]


@pytest.mark.parametrize("path", TIMED)
@pytest.mark.parametrize("name", ["since", "until"])
def test_times_are_bounded_to_the_protocols_timestamps(stack, path, name):
    # Past 10**14 ms (year 5138), negative, a Unicode digit that int() refuses, ISO times outside the range
    for value in (HUGE, str(10**14), "-1", "\u00b3", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+23:59"):
        _refused(stack, path, name, value)
    with stack.client() as api:
        for ok in (str(10**14 - 1), "0", "2024-05-01T12:00:00Z"):
            other = {"until": str(10**14 - 1)} if name == "since" else {"since": "0"}
            r = api.get(path, params={name: ok, **other})
            assert r.status_code == 200, (path, name, ok, r.text)


def test_log_cursors_are_validated(stack):
    path = f"/api/devices/{UNIT}/logs"
    for value in (f"{HUGE}:1", f"1:{HUGE}", "1:-1", "\u00b3:1", "1:2:3", "x"):
        _refused(stack, path, "cursor", value)
    with stack.client() as api:
        assert api.get(path, params={"cursor": f"{10**14 - 1}:{2**63 - 1}"}).status_code == 200


def test_turn_ttl_is_bounded(stack):
    for path in ("/api/turn-credentials", "/turn-credentials"):
        _refused(stack, path, "ttl", HUGE)


def test_if_match_versions_are_bounded(stack):
    with stack.client() as api:
        for value in (f'"{HUGE}"'.encode(), '"\u00b3"'.encode("latin-1")):  # headers are read as Latin-1
            r = api.put(f"/api/devices/{UNIT}/config", json={"a": 1}, headers={"If-Match": value})
            assert r.status_code == 422 and "If-Match" in r.json()["detail"], r.text
            r = api.put("/api/config/groups/bounds", json={"a": 1}, headers={"If-Match": value})
            assert r.status_code == 422 and "If-Match" in r.json()["detail"], r.text


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_command_and_rollout_args_take_only_json_numbers(stack, number):
    # Python's JSON parser turns these into float inf/nan; PostgreSQL's json type refuses them when stored
    bodies = {
        f"/api/devices/{UNIT}/commands": '{"name": "ping", "args": {"x": NUMBER}}',
        "/api/rollouts": '{"command": "ping", "device_ids": ["UNIT"], "args": {"x": [NUMBER]}}'.replace("UNIT", UNIT),
    }
    with stack.client() as api:
        for path, body in bodies.items():
            r = api.post(path, content=body.replace("NUMBER", number), headers=JSON)
            assert r.status_code == 422 and "args" in r.json()["detail"], (path, r.status_code, r.text)


def test_json_documents_have_a_bounded_depth(stack):
    deep, fine = "[" * 300 + "1" + "]" * 300, "[" * 20 + "1" + "]" * 20  # pydantic cannot even answer the deep one
    rollout = '{"command": "ping", "device_ids": ["UNIT"], "args": {"x": DOC}}'.replace("UNIT", UNIT)
    with stack.client() as api:

        def send(method: str, path: str, body: str, doc: str):
            return api.request(method, path, content=body.replace("DOC", doc), headers=JSON)

        for method, path, body in [
            ("PUT", f"/api/devices/{UNIT}/config", '{"x": DOC}'),
            ("PUT", "/api/config/groups/deep", '{"x": DOC}'),
            ("POST", f"/api/devices/{UNIT}/commands", '{"name": "ping", "args": {"x": DOC}}'),
            ("POST", "/api/rollouts", rollout),
        ]:
            r = send(method, path, body, deep)
            assert r.status_code == 422 and "deep" in r.json()["detail"], (path, r.status_code, r.text)
        assert send("PUT", f"/api/devices/{UNIT}/config", '{"x": DOC}', fine).status_code == 200
        assert api.get(f"/api/devices/{UNIT}/config").status_code == 200
