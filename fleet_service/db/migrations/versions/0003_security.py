"""users, sessions and audit

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _str(length: int | None = None):
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "fleet_user",
        sa.Column("id", _str(32), nullable=False),
        sa.Column("username", _str(64), nullable=False),
        sa.Column("role", _str(16), nullable=False),
        sa.Column("password_hash", _str(200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("password_changed_at", sa.BigInteger(), nullable=False),
        sa.Column("last_login_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "web_session",
        sa.Column("id", _str(64), nullable=False),
        sa.Column("user_id", _str(32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("source_ip", _str(64), nullable=False),
        sa.Column("user_agent", _str(200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_session_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_web_session_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "audit_entry",
        sa.Column("id", _ID, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("actor", _str(120), nullable=False),
        sa.Column("role", _str(16), nullable=False),
        sa.Column("method", _str(8), nullable=False),
        sa.Column("route", _str(200), nullable=False),
        sa.Column("path", _str(300), nullable=False),
        sa.Column("target", _str(120), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("source_ip", _str(64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.create_index("ix_audit_ts", ["ts"], unique=False)
        batch_op.create_index("ix_audit_target_ts", ["target", "ts"], unique=False)

    op.create_table(
        "claim_token",
        sa.Column("id", _str(32), nullable=False),
        sa.Column("fingerprint", _str(64), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", _str(120), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.Column("device_id", _str(63), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_table(
        "broker_credential",
        sa.Column("device_id", _str(63), nullable=False),
        sa.Column("password_hash", _str(200), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )


def downgrade() -> None:
    op.drop_table("broker_credential")
    op.drop_table("claim_token")
    with op.batch_alter_table("audit_entry", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_target_ts")
        batch_op.drop_index("ix_audit_ts")
    op.drop_table("audit_entry")
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_session_expires_at"))
        batch_op.drop_index(batch_op.f("ix_web_session_user_id"))
    op.drop_table("web_session")
    op.drop_table("fleet_user")
