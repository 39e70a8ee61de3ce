"""notifications: channels, the outbox with its alerts, the delivery log, the dispatcher's lease and cursor

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notification_channel",
        sa.Column("id", _S(length=32), nullable=False),
        sa.Column("name", _S(length=200), nullable=False),
        sa.Column("kind", _S(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("severities", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("group_wait_s", sa.Float(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", _S(length=200), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", _S(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "notification",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("channel_id", _S(length=32), nullable=False),
        sa.Column("rule_id", _S(length=32), nullable=False),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("state", _S(length=16), nullable=False),
        sa.Column("reason", _S(length=500), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", _S(length=128), nullable=True),
        sa.Column("claim_expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", _S(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notification_due", "notification", ["state", "next_attempt_at"], unique=False)
    op.create_index("ix_notification_group", "notification", ["channel_id", "rule_id", "status", "state"], unique=False)
    op.create_index("ix_notification_created", "notification", ["created_at"], unique=False)
    op.create_table(
        "notification_alert",
        sa.Column("notification_id", _BIG_ID, nullable=False),
        sa.Column("alert_id", _BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("notification_id", "alert_id"),
    )
    op.create_index("ix_notification_alert_alert", "notification_alert", ["alert_id"], unique=False)
    op.create_table(
        "notification_attempt",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("notification_id", _BIG_ID, nullable=True),
        sa.Column("channel_id", _S(length=32), nullable=False),
        sa.Column("purpose", _S(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", _S(length=500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notification_attempt_channel", "notification_attempt", ["channel_id", "id"], unique=False)
    op.create_index("ix_notification_attempt_notification", "notification_attempt", ["notification_id"], unique=False)
    cursor = op.create_table(
        "notification_cursor",
        sa.Column("name", _S(length=32), nullable=False),
        sa.Column("holder", _S(length=128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # Notifications start with the alerts that fire from now on: history already in `alert_event` is not sent.
    last = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM alert_event")).scalar_one()
    op.bulk_insert(cursor, [{"name": "dispatcher", "holder": "", "expires_at": 0, "last_event_id": int(last)}])


def downgrade() -> None:
    op.drop_table("notification_cursor")
    op.drop_index("ix_notification_attempt_notification", table_name="notification_attempt")
    op.drop_index("ix_notification_attempt_channel", table_name="notification_attempt")
    op.drop_table("notification_attempt")
    op.drop_index("ix_notification_alert_alert", table_name="notification_alert")
    op.drop_table("notification_alert")
    for name in ("ix_notification_created", "ix_notification_group", "ix_notification_due"):
        op.drop_index(name, table_name="notification")
    op.drop_table("notification")
    op.drop_table("notification_channel")
