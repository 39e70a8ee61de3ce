"""Units' secrets in Mosquitto's own password-file hash format."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from fleet_service.db.columns import ms_field


class BrokerCredential(SQLModel, table=True):
    """A unit's secret in Mosquitto's own password-file hash format, so a managed Mosquitto can be re-synced."""

    __tablename__ = "broker_credential"

    device_id: str = Field(primary_key=True, max_length=63)
    password_hash: str = Field(max_length=200)
    updated_at: int = ms_field()
