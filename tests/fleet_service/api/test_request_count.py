"""`fleet_http_requests_total` counts every answer by its status class, errors included."""

from __future__ import annotations

from tests.support.stack import ADMIN_TOKEN, StackThread, settings_for


def counted(api, code: str) -> float:
    for line in api.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text.splitlines():
        if line.startswith(f'fleet_http_requests_total{{code="{code}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_answers_are_counted_by_status_class(tmp_path):
    with StackThread(settings_for(tmp_path)) as stack, stack.client() as api:
        ok, missing, refused = counted(api, "2xx"), counted(api, "4xx"), counted(api, "4xx")
        for _ in range(3):
            assert api.get("/health").status_code == 200
        assert (
            api.get("/api/devices/no-such-unit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404
        )
        assert api.get("/api/devices", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        # the /metrics reads in between are answers too (2xx)
        assert counted(api, "2xx") >= ok + 3 + 1
        assert counted(api, "4xx") == missing + 2 == refused + 2
