"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_table(
        "command",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("output", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("rollout_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("command", schema=None) as batch_op:
        batch_op.create_index("ix_command_device_created", ["device_id", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_command_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_command_rollout_id"), ["rollout_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_command_status"), ["status"], unique=False)

    op.create_table(
        "command_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("command_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("command_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_command_event_command_id"), ["command_id"], unique=False)

    op.create_table(
        "device",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("secret_hash", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("session", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("last_seen", sa.BigInteger(), nullable=True),
        sa.Column("online_changed_at", sa.BigInteger(), nullable=True),
        sa.Column("offline_reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("agent_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("software_version", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("boot_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hostname", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("ips", sa.JSON(), nullable=False),
        sa.Column("uptime_s", sa.Float(), nullable=True),
        sa.Column("heartbeat_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_metrics", sa.JSON(), nullable=False),
        sa.Column("logs_dropped", sa.BigInteger(), nullable=False),
        sa.Column("desired_config", sa.JSON(), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=False),
        sa.Column("reported_config", sa.JSON(), nullable=False),
        sa.Column("reported_version", sa.Integer(), nullable=False),
        sa.Column("config_status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("config_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_online"), ["online"], unique=False)

    op.create_table(
        "log_record",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("rec_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("level", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("level_no", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("msg", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "rec_id", name="uq_log_device_rec"),
    )
    with op.batch_alter_table("log_record", schema=None) as batch_op:
        batch_op.create_index("ix_log_device_ts", ["device_id", "ts"], unique=False)

    op.create_table(
        "metric_sample",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("mem_percent", sa.Float(), nullable=True),
        sa.Column("mem_used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_percent", sa.Float(), nullable=True),
        sa.Column("disk_free_bytes", sa.BigInteger(), nullable=True),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("temp_c", sa.Float(), nullable=True),
        sa.Column("net_rx_bytes", sa.BigInteger(), nullable=True),
        sa.Column("net_tx_bytes", sa.BigInteger(), nullable=True),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("metric_sample", schema=None) as batch_op:
        batch_op.create_index("ix_metric_device_ts", ["device_id", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("metric_sample", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_device_ts")

    op.drop_table("metric_sample")
    with op.batch_alter_table("log_record", schema=None) as batch_op:
        batch_op.drop_index("ix_log_device_ts")

    op.drop_table("log_record")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_online"))

    op.drop_table("device")
    with op.batch_alter_table("command_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_command_event_command_id"))

    op.drop_table("command_event")
    with op.batch_alter_table("command", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_command_status"))
        batch_op.drop_index(batch_op.f("ix_command_rollout_id"))
        batch_op.drop_index(batch_op.f("ix_command_device_id"))
        batch_op.drop_index("ix_command_device_created")

    op.drop_table("command")
    op.drop_table("api_token")
