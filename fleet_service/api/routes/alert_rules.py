"""Alert rules: viewers read them, admins write them (built-in defaults too)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from fleet_service.alerts.rules import (
    RuleSpec,
    create_rule,
    delete_rule,
    get_rule,
    list_rules,
    rule_public,
    update_rule,
)
from fleet_service.api.deps import Admin, Ctx, Viewer
from fleet_service.api.schemas.alerts import AlertRulePublic
from fleet_service.api.schemas.common import Items

router = APIRouter(prefix="/api/alert-rules", tags=["alerts"])


@router.get("", response_model=Items[AlertRulePublic])
async def list_alert_rules(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return {"items": [rule_public(r) for r in await asyncio.to_thread(list_rules, ctx.engine)]}


@router.post("", status_code=201, response_model=AlertRulePublic)
async def create_alert_rule(body: RuleSpec, ctx: Ctx, who: Admin) -> dict[str, Any]:
    return rule_public(await asyncio.to_thread(create_rule, ctx.engine, body, who.label))


@router.get("/{rule_id}", response_model=AlertRulePublic)
async def get_alert_rule(rule_id: str, ctx: Ctx, _: Viewer) -> dict[str, Any]:
    return rule_public(await asyncio.to_thread(get_rule, ctx.engine, rule_id))


@router.put("/{rule_id}", response_model=AlertRulePublic)
async def update_alert_rule(rule_id: str, body: RuleSpec, ctx: Ctx, who: Admin) -> dict[str, Any]:
    """Replace the rule whole; its pending conditions start over, an open alert stays until the rule clears it."""
    return rule_public(await asyncio.to_thread(update_rule, ctx.engine, rule_id, body, who.label))


@router.delete("/{rule_id}", status_code=204)
async def delete_alert_rule(rule_id: str, ctx: Ctx, who: Admin) -> Response:
    """Delete the rule (a built-in one is not created again); its open alerts are resolved."""
    for alert in await asyncio.to_thread(delete_rule, ctx.engine, rule_id, who.label):
        ctx.bus.publish("alert", alert, alert["device_id"])
    return Response(status_code=204)
