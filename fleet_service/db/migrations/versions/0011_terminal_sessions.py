"""terminal sessions: an audit row per remote shell, and its asciinema recording in chunks

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "terminal_session",
        sa.Column("id", _S(length=32), nullable=False),
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("actor", _S(length=200), nullable=False),
        sa.Column("role", _S(length=16), nullable=False),
        sa.Column("source_ip", _S(length=64), nullable=False),
        sa.Column("replica", _S(length=80), nullable=False),
        sa.Column("command", _S(length=4096), nullable=True),
        sa.Column("remote_user", _S(length=200), nullable=True),
        sa.Column("cols", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.Column("close_reason", _S(length=32), nullable=True),
        sa.Column("close_message", _S(length=1000), nullable=True),
        sa.Column("recording_bytes", sa.Integer(), nullable=False),
        sa.Column("recording_truncated", sa.Boolean(), nullable=False),
        sa.Column("recording_deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_terminal_session_started_at", "terminal_session", ["started_at"])
    op.create_index("ix_terminal_session_device", "terminal_session", ["device_id", "started_at"])
    op.create_table(
        "terminal_recording_chunk",
        sa.Column("session_id", _S(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("terminal_recording_chunk")
    op.drop_index("ix_terminal_session_device", table_name="terminal_session")
    op.drop_index("ix_terminal_session_started_at", table_name="terminal_session")
    op.drop_table("terminal_session")
