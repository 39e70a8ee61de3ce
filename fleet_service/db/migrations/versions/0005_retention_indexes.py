"""Indexes on log and metric time, so retention finds old rows without scanning whole tables

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_log_ts", "log_record", ["ts"])
    op.create_index("ix_metric_ts", "metric_sample", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_metric_ts", table_name="metric_sample")
    op.drop_index("ix_log_ts", table_name="log_record")
