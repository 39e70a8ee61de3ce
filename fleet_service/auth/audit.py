"""The audit log: every state-changing API call (who, what, target, when, result), never a request body.

Calls answered without a valid credential are noise anyone can make: each source address gets a budget of them as
full rows (`FLEET_UNAUTHENTICATED_CHANGES_PER_SOURCE` per `FLEET_AUTH_WINDOW_S`); past it they are only counted in
`fleet_http_unauthenticated_changes_total` (by route template and status), and routes that need a credential
answer 429 (`api/deps.py`). Retention deletes rows older than `FLEET_AUDIT_RETENTION_DAYS` (`retention.py`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_service.auth.models import AuditEntry
from fleet_service.db.core import table_of
from fleet_service.db.on_loop import LoopDatabase, LoopStatement
from protocol.ids import now_ms

__all__ = ["AUDITED_METHODS", "AuditMiddleware", "record"]

log = logging.getLogger(__name__)

AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Questions, not changes: a clustered broker asks these on every connect (and publish, past its cache). They are
# counted in fleet_broker_auth_decisions_total instead, and wrong broker tokens are logged (fleet_service/api/
# broker_guard.py).
UNAUDITED_PREFIXES = ("/api/broker-auth/",)
UNAUTHENTICATED_METRIC = "fleet_http_unauthenticated_changes_total"
# Path parameters that name what a call acts on, most specific first.
TARGET_PARAMS = ("channel_id", "command_id", "token_id", "claim_id", "username", "rollout_id", "group_id", "device_id")


def record(engine: Engine, **fields: Any) -> None:
    """Store one audit row (`_row` names the fields), committed on its own."""
    # One statement: on PostgreSQL in autocommit (no BEGIN and COMMIT round trips; a single INSERT is atomic).
    autocommit = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        if autocommit:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(_INSERT, _row(**fields))
        if not autocommit:
            conn.commit()


async def record_on_loop(db: LoopDatabase, **fields: Any) -> None:
    """`record` on PostgreSQL, awaited by the event loop: every state-changing call waits for it before its
    answer, so it takes no worker thread."""
    await db.run(_LOOP_INSERT, _row(**fields))


def _row(
    *, actor: str, role: str, method: str, route: str, path: str, target: str, status: int, source_ip: str
) -> dict[str, Any]:
    return {
        "ts": now_ms(),
        "actor": actor[:120],
        "role": role[:16],
        "method": method[:8],
        "route": route[:200],
        "path": path[:300],
        "target": target[:120],
        "status": status,
        "source_ip": source_ip[:64],
    }


_INSERT = insert(table_of(AuditEntry))  # built once: building a statement per call costs more CPU than sending it
# Every column but the id: a column `_row` does not fill fails loudly (a missing parameter), never silently.
_LOOP_INSERT = LoopStatement(_INSERT, [c.name for c in table_of(AuditEntry).columns if not c.primary_key])


def _target(state: dict[str, Any], params: dict[str, Any]) -> str:
    explicit = state.get("audit_target")
    if explicit:
        return str(explicit)
    for name in TARGET_PARAMS:
        if params.get(name):
            return str(params[name])
    return ""


def _unauthenticated_within_budget(scope: Scope, route: str, status: int, source_ip: str) -> bool:
    """Count a change answered without a valid credential; True while its source is within its budget of rows."""
    ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
    if ctx is None or ctx.limits is None:  # not inside the service's app: store it as before
        return True
    ctx.registry.describe(
        UNAUTHENTICATED_METRIC,
        "counter",
        "POST/PUT/PATCH/DELETE answered without a valid credential, by route template and status",
    )
    ctx.registry.inc(UNAUTHENTICATED_METRIC, route=route, status=str(status))
    limiter = ctx.limits.unauthenticated(ctx.settings.unauthenticated_changes_per_source, ctx.settings.auth_window_s)
    return not limiter.failed(source_ip)


class AuditMiddleware:
    """ASGI middleware around the API: records as the answer starts, from what routing and auth left in scope.

    Routes name their target through `request.state.audit_target` when it is not a path parameter (e.g.
    the id in an enrollment body); `identify` leaves `request.state.identity`.
    """

    def __init__(self, app: ASGIApp, engine: Engine, loop_db: LoopDatabase | None = None) -> None:
        self.app = app
        self.engine = engine
        self.loop_db = loop_db  # PostgreSQL: the row is written by the event loop, not a worker thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in AUDITED_METHODS
            or not scope["path"].startswith("/api/")
            or scope["path"].startswith(UNAUDITED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        stored = False

        async def store_then_send(message: Message) -> None:
            nonlocal stored
            if message["type"] == "http.response.start" and not stored:
                stored = True  # recorded before the caller sees the answer: an audit read after it finds it
                await self._store(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, store_then_send)
        finally:
            if not stored:  # the app failed before answering
                await self._store(scope, 500)

    async def _store(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        identity = state.get("identity")
        route = getattr(scope.get("route"), "path", "") or "(no route)"
        client = scope.get("client")
        source_ip = client[0] if client else ""
        if identity is None and not _unauthenticated_within_budget(scope, route, status, source_ip):
            return
        fields = {
            "actor": identity.label if identity else "anonymous",
            "role": identity.role if identity else "",
            "method": scope["method"],
            "route": route,
            "path": scope["path"],
            "target": _target(state, scope.get("path_params") or {}),
            "status": status,
            "source_ip": source_ip,
        }
        try:
            if self.loop_db is not None:
                await record_on_loop(self.loop_db, **fields)
            else:
                await asyncio.to_thread(record, self.engine, **fields)
        except SQLAlchemyError as exc:  # the database may be down; the call itself already happened
            log.warning("audit entry for %s %s not stored: %s", scope["method"], scope["path"], type(exc).__name__)
