"""`PATCH /api/users/{name}` racing a `DELETE` of the same user answers 404, not a 500 (SQLite and PostgreSQL).

The race is made certain rather than hoped for: just before the PATCH writes its change, a hook on the service's
own engine deletes the user through the real `DELETE` route over HTTP.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from tests.support.auth import add_user
from tests.support.stack import StackThread, settings_for

USER_UPDATE = re.compile(r'^\s*UPDATE\s+"?fleet_user"?\s', re.IGNORECASE)


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request, tmp_path):
    overrides = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    with StackThread(settings_for(tmp_path, **overrides)) as st:
        yield st


@pytest.mark.parametrize("change", [{"role": "admin"}, {"password": "another long password"}])
def test_a_user_deleted_while_being_changed_is_a_404(stack, change):
    add_user(stack, "racer", "viewer")
    deletes = []

    def delete_first(_conn, _cursor, statement, *_args) -> None:
        if USER_UPDATE.match(statement) and not deletes:
            with stack.client() as api:
                deletes.append(api.delete("/api/users/racer").status_code)

    engine = stack.ctx.engine
    event.listen(engine, "before_cursor_execute", delete_first)
    try:
        with stack.client() as api:
            r = api.patch("/api/users/racer", json=change)
    finally:
        event.remove(engine, "before_cursor_execute", delete_first)
    assert deletes == [204]  # the DELETE really ran in between
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == "no user named 'racer'"
    with stack.client() as api:
        assert "racer" not in [u["username"] for u in api.get("/api/users").json()["items"]]
        assert api.patch("/api/users/racer", json=change).status_code == 404
