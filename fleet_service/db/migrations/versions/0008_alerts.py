"""alerts: rules (with the built-in defaults), condition state, alerts and their history, silences, the lease

Revision ID: 0008
Revises: 0007
"""

import secrets
import time

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Created here, once: an admin's later edit or delete is never undone by a restart.
_DEFAULTS = [
    {"builtin": "offline", "name": "Unit offline", "kind": "offline", "severity": "critical", "for_s": 120.0},
    {
        "builtin": "disk",
        "name": "Disk almost full",
        "kind": "metric",
        "severity": "warning",
        "field": "disk_percent",
        "op": ">",
        "threshold": 90.0,
        "clear_threshold": 85.0,
        "for_s": 300.0,
    },
    {
        "builtin": "temperature",
        "name": "Temperature high",
        "kind": "metric",
        "severity": "warning",
        "field": "temp_c",
        "op": ">",
        "threshold": 85.0,
        "clear_threshold": 80.0,
        "for_s": 120.0,
    },
    {"builtin": "service", "name": "Service down", "kind": "service", "severity": "warning", "for_s": 60.0},
    {
        "builtin": "config_sync",
        "name": "Configuration out of sync",
        "kind": "config_sync",
        "severity": "warning",
        "for_s": 600.0,
    },
]


def upgrade() -> None:
    rule = op.create_table(
        "alert_rule",
        sa.Column("id", _S(length=32), nullable=False),
        sa.Column("name", _S(length=200), nullable=False),
        sa.Column("kind", _S(length=16), nullable=False),
        sa.Column("severity", _S(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("tag", _S(length=64), nullable=True),
        sa.Column("device_id", _S(length=63), nullable=True),
        sa.Column("field", _S(length=128), nullable=False),
        sa.Column("op", _S(length=2), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("clear_threshold", sa.Float(), nullable=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("for_s", sa.Float(), nullable=False),
        sa.Column("clear_for_s", sa.Float(), nullable=False),
        sa.Column("builtin", _S(length=32), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", _S(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "alert_condition",
        sa.Column("rule_id", _S(length=32), nullable=False),
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("pending_since", sa.BigInteger(), nullable=True),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("clearing_since", sa.BigInteger(), nullable=True),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("rule_id", "device_id"),
    )
    op.create_table(
        "alert",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("rule_id", _S(length=32), nullable=False),
        sa.Column("rule_name", _S(length=200), nullable=False),
        sa.Column("kind", _S(length=16), nullable=False),
        sa.Column("severity", _S(length=16), nullable=False),
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("state", _S(length=16), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("fired_at", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_at", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", _S(length=200), nullable=True),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.Column("resolved_by", _S(length=200), nullable=True),
        sa.Column("silenced", sa.Boolean(), nullable=False),
        sa.Column("silence_id", _S(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_alert_open",
        "alert",
        ["rule_id", "device_id"],
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state <> 'resolved'"),
    )
    op.create_index("ix_alert_fired_at", "alert", ["fired_at"], unique=False)
    op.create_index("ix_alert_device", "alert", ["device_id", "fired_at"], unique=False)
    op.create_index("ix_alert_resolved_at", "alert", ["resolved_at"], unique=False)
    op.create_table(
        "alert_event",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("alert_id", _BIG_ID, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("type", _S(length=16), nullable=False),
        sa.Column("actor", _S(length=200), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("silenced", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_event_alert", "alert_event", ["alert_id", "id"], unique=False)
    op.create_table(
        "silence",
        sa.Column("id", _S(length=32), nullable=False),
        sa.Column("rule_id", _S(length=32), nullable=True),
        sa.Column("device_id", _S(length=63), nullable=True),
        sa.Column("tag", _S(length=64), nullable=True),
        sa.Column("severity", _S(length=16), nullable=True),
        sa.Column("starts_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("comment", _S(length=1000), nullable=False),
        sa.Column("created_by", _S(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_silence_ends_at", "silence", ["ends_at"], unique=False)
    lease = op.create_table(
        "alert_lease",
        sa.Column("name", _S(length=32), nullable=False),
        sa.Column("holder", _S(length=128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    now = int(time.time() * 1000)
    base = {
        "enabled": True,
        "tag": None,
        "device_id": None,
        "field": "",
        "op": "",
        "threshold": None,
        "clear_threshold": None,
        "value": None,
        "clear_for_s": 0.0,
        "created_at": now,
        "updated_at": now,
        "updated_by": "built-in",
    }
    op.bulk_insert(rule, [{**base, **d, "id": secrets.token_hex(16)} for d in _DEFAULTS])
    op.bulk_insert(lease, [{"name": "evaluator", "holder": "", "expires_at": 0}])


def downgrade() -> None:
    op.drop_table("alert_lease")
    op.drop_index("ix_silence_ends_at", table_name="silence")
    op.drop_table("silence")
    op.drop_index("ix_alert_event_alert", table_name="alert_event")
    op.drop_table("alert_event")
    for name in ("ix_alert_resolved_at", "ix_alert_device", "ix_alert_fired_at", "ux_alert_open"):
        op.drop_index(name, table_name="alert")
    op.drop_table("alert")
    op.drop_table("alert_condition")
    op.drop_table("alert_rule")
