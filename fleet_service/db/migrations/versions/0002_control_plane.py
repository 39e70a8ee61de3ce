"""rollouts and group config

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("command", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("ttl_s", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=True),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("pause_s", sa.Float(), nullable=False),
        sa.Column("abort_threshold", sa.Float(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("dispatched_batches", sa.Integer(), nullable=False),
        sa.Column("next_batch_at", sa.BigInteger(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_state"), ["state"], unique=False)

    op.create_table(
        "rollout_unit",
        sa.Column("rollout_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("command_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", "device_id"),
    )
    with op.batch_alter_table("rollout_unit", schema=None) as batch_op:
        batch_op.create_index("ix_rollout_unit_batch", ["rollout_id", "batch"], unique=False)

    op.create_table(
        "config_group",
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.PrimaryKeyConstraint("tag"),
    )
    device_config = op.create_table(
        "device_config",
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    # Before groups existed a unit's desired config was all its own: keep it as the unit's own config.
    device = sa.table(
        "device",
        sa.column("id"),
        sa.column("desired_config", sa.JSON()),
        sa.column("desired_version", sa.Integer()),
        sa.column("created_at", sa.BigInteger()),
    )
    op.execute(
        device_config.insert().from_select(
            ["device_id", "config", "updated_at"],
            sa.select(device.c.id, device.c.desired_config, device.c.created_at).where(device.c.desired_version > 0),
        )
    )


def downgrade() -> None:
    op.drop_table("device_config")
    op.drop_table("config_group")
    with op.batch_alter_table("rollout_unit", schema=None) as batch_op:
        batch_op.drop_index("ix_rollout_unit_batch")
    op.drop_table("rollout_unit")
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_state"))
    op.drop_table("rollout")
