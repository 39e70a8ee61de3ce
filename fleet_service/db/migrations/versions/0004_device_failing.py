"""device.failing: the latest metrics report a state "failed" (kept by ingest, counted by GET /api/devices)

Revision ID: 0004
Revises: 0003
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 1000


def _reports_failure(value) -> bool:
    """The rule of fleet_service.ingest.telemetry_path.reports_failure, frozen here for the backfill."""
    if isinstance(value, dict):
        return any(v == "failed" or _reports_failure(v) for v in value.values())
    if isinstance(value, list):
        return any(_reports_failure(v) for v in value)
    return False


def upgrade() -> None:
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failing", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index(
        "ix_device_failing",
        "device",
        ["id"],
        unique=False,
        sqlite_where=sa.text("failing = 1"),
        postgresql_where=sa.text("failing"),
    )

    device = sa.table(
        "device", sa.column("id", sa.String()), sa.column("last_metrics", sa.JSON()), sa.column("failing", sa.Boolean())
    )
    conn = op.get_bind()
    failing = []
    for row in conn.execute(sa.select(device.c.id, device.c.last_metrics)):
        metrics = row.last_metrics
        if isinstance(metrics, str):  # a driver that hands JSON back as text
            metrics = json.loads(metrics)
        if _reports_failure(metrics):
            failing.append(row.id)
    for start in range(0, len(failing), _BATCH):
        conn.execute(sa.update(device).where(device.c.id.in_(failing[start : start + _BATCH])).values(failing=True))


def downgrade() -> None:
    op.drop_index("ix_device_failing", table_name="device")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_column("failing")
