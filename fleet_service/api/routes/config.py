"""Desired/reported configuration of a unit, published retained to `config/desired`."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Response
from sqlmodel import Session

from fleet_service.api.deps import Ctx, Operator, Viewer, load_device
from fleet_service.ingest.link import BrokerUnavailable
from fleet_service.models import Device, device_status
from protocol.payloads import ConfigDesired, encode
from protocol.topics import Kind, topic

router = APIRouter(prefix="/api/devices", tags=["config"])
MAX_CONFIG_BYTES = 64 * 1024


def config_view(d: Device) -> dict[str, Any]:
    return {"device_id": d.id, "desired": d.desired_config, "desired_version": d.desired_version,
            "reported": d.reported_config, "reported_version": d.reported_version,
            "in_sync": device_status(d)["config_in_sync"], "status": d.config_status, "error": d.config_error}


def validate_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise HTTPException(422, "the config must be a JSON object")
    size = len(json.dumps(config))
    if size > MAX_CONFIG_BYTES:
        raise HTTPException(422, f"the config is {size} bytes; at most {MAX_CONFIG_BYTES} are allowed")
    return config


@router.get("/{device_id}/config")
def get_config(device_id: str, ctx: Ctx, _: Viewer, response: Response) -> dict[str, Any]:
    d = load_device(ctx, device_id)
    response.headers["ETag"] = f'"{d.desired_version}"'
    return config_view(d)


@router.put("/{device_id}/config")
async def put_config(
    device_id: str,
    ctx: Ctx,
    _: Operator,
    response: Response,
    config: Annotated[Any, Body()],
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    config = validate_config(config)

    def store() -> Device:
        with Session(ctx.engine, expire_on_commit=False) as s:
            d = s.get(Device, device_id)
            if d is None:
                raise HTTPException(404, f"no unit with id {device_id!r}")
            if if_match is not None and if_match.strip().strip('"') != str(d.desired_version):
                raise HTTPException(412, f"desired config is at version {d.desired_version}, not {if_match}")
            d.desired_config = config
            d.desired_version += 1
            s.add(d)
            s.commit()
            return d

    d = await asyncio.to_thread(store)
    message = encode(ConfigDesired(version=d.desired_version, config=config))
    try:
        await ctx.link.publish(topic(device_id, Kind.CONFIG_DESIRED), message, qos=1, retain=True)
    except BrokerUnavailable as exc:
        # Stored: it is published on the next config change or when the broker link returns.
        response.headers["Warning"] = f'199 fleet "{exc}"'
    view = config_view(d)
    ctx.bus.publish("config", {**view, "reported": None, "desired": None}, device_id)
    response.headers["ETag"] = f'"{d.desired_version}"'
    return view


__all__ = ["router", "load_device"]
