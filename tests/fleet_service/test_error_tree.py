"""One error tree: the service refuses through FleetError kinds, answered by the one handler in app.py.

Read from the source: no module makes FastAPI's HTTPException (the body limit's middleware excepted: FastAPI
re-raises it from reading the body), so no route or domain picks a status by hand. Each refusal of a socket
(close code 4000 + status) is the FleetError of the same kind, so the proxy answers it over HTTP with that status.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fleet_service import errors, refusals
from fleet_service.api.error_status import ERROR_STATUS, status_of
from fleet_service.errors import FleetError, TooManyRequests, Unauthenticated

ROOT = Path(__file__).resolve().parents[2]
HTTP_EXCEPTION_ALLOWED = {"fleet_service/api/body_limit.py"}


def _makes_http_exception(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name in ("HTTPException", "WebSocketException"):
            lines.append(node.lineno)
    return lines


def test_no_module_answers_an_error_status_by_hand():
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "fleet_service").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in HTTP_EXCEPTION_ALLOWED
        for line in _makes_http_exception(path)
    }
    assert found == set(), "raise a FleetError kind (fleet_service/errors.py) instead"


def _status(kind: type[FleetError]) -> int | None:
    """The status of a kind: the nearest class in its MRO that has one (what status_of does for an error)."""
    return next((ERROR_STATUS[k] for k in kind.__mro__ if k in ERROR_STATUS), None)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (refusals.CLOSE_BAD_REQUEST, 422),
        (refusals.CLOSE_UNAUTHENTICATED, 401),
        (refusals.CLOSE_FORBIDDEN, 403),
        (refusals.CLOSE_DISABLED, 403),
        (refusals.CLOSE_UNKNOWN_UNIT, 404),
        (refusals.CLOSE_UNIT_OFFLINE, 409),
        (refusals.CLOSE_LIMIT, 429),
        (refusals.CLOSE_REFUSED, 502),
        (refusals.CLOSE_CONNECT_FAILED, 502),
        (refusals.CLOSE_BROKER_DOWN, 503),
        (refusals.CLOSE_NO_ANSWER, 504),
    ],
)
def test_a_refusal_is_the_error_of_its_kind(code, status):
    error = refusals.refused(code, "why")
    assert isinstance(error, refusals.Refused) and isinstance(error, FleetError)
    assert (error.code, str(error), status_of(error)) == (code, "why", status)
    assert isinstance(error, Unauthenticated) == (status == 401)  # the 401 that carries the Bearer challenge
    if isinstance(error, TooManyRequests):
        assert error.retry_after == 1


def test_every_kind_of_the_tree_has_a_status_and_is_exported():
    def kinds(cls: type[FleetError]) -> list[type[FleetError]]:
        return [cls, *(k for sub in cls.__subclasses__() for k in kinds(sub))]

    tree = [getattr(errors, name) for name in errors.__all__ if name != "FleetError"]
    assert [k.__name__ for k in tree if _status(k) is None] == []
    assert {k for k in kinds(FleetError) if k.__module__ == "fleet_service.errors"} - {FleetError} == set(tree)
