"""alert rule kinds log, command_failed and rollout_failed: their parameters, and the indexes that let the
evaluator read only the commands and rollouts that ended lately

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("alert_rule", schema=None) as batch_op:
        batch_op.add_column(sa.Column("level", _S(length=16), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("pattern", _S(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("regex", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("window_s", sa.Float(), nullable=True))
    # The defaults only filled the rows already there; the models give every new row its values.
    with op.batch_alter_table("alert_rule", schema=None) as batch_op:
        batch_op.alter_column("level", server_default=None)
        batch_op.alter_column("pattern", server_default=None)
        batch_op.alter_column("regex", server_default=None)
    op.create_index("ix_command_device_finished", "command", ["device_id", "finished_at"], unique=False)
    op.create_index("ix_command_finished", "command", ["finished_at"], unique=False)
    op.create_index("ix_rollout_finished", "rollout", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rollout_finished", table_name="rollout")
    op.drop_index("ix_command_finished", table_name="command")
    op.drop_index("ix_command_device_finished", table_name="command")
    with op.batch_alter_table("alert_rule", schema=None) as batch_op:
        batch_op.drop_column("window_s")
        batch_op.drop_column("regex")
        batch_op.drop_column("pattern")
        batch_op.drop_column("level")
