"""Ingest budgets and server time: units' refused messages counted, the receive time kept beside a unit's ts

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("device", sa.Column("ingest_throttled", sa.BigInteger(), nullable=False, server_default="0"))
    # About how many log rows a unit has (counted at ingest, made exact when it nears its cap).
    op.add_column("device", sa.Column("log_rows", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE device SET log_rows = (SELECT COUNT(*) FROM log_record WHERE log_record.device_id = device.id)")
    for table, old, new in (
        ("log_record", "ix_log_ts", "ix_log_received"),
        ("metric_sample", "ix_metric_ts", "ix_metric_received"),
    ):
        op.add_column(table, sa.Column("received_at", sa.BigInteger(), nullable=True))
        op.execute(f"UPDATE {table} SET received_at = ts")  # the best guess for rows stored before
        op.create_index(new, table, ["received_at"])  # retention runs on the server's time
        op.drop_index(old, table_name=table)


def downgrade() -> None:
    for table, old, new in (
        ("log_record", "ix_log_ts", "ix_log_received"),
        ("metric_sample", "ix_metric_ts", "ix_metric_received"),
    ):
        op.create_index(old, table, ["ts"])
        op.drop_index(new, table_name=table)
        op.drop_column(table, "received_at")
    op.drop_column("device", "log_rows")
    op.drop_column("device", "ingest_throttled")
