"""Claim tokens for self-enrollment (fleet_service/auth/models.py claim_token_public)."""

from __future__ import annotations

from fleet_service.api.schemas.common import Public

__all__ = ["ClaimTokenCreated", "ClaimTokenPublic"]


class ClaimTokenPublic(Public):
    id: str
    tags: list[str]
    created_at: str
    expires_at: str
    created_by: str
    state: str  # open | used | expired
    used_at: str | None
    device_id: str | None


class ClaimTokenCreated(ClaimTokenPublic):
    token: str  # shown this once
