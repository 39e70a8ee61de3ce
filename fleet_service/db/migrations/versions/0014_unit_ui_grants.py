"""unit web UI grants: one-time tickets and the cookies they buy for a unit port's own origin

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "unit_ui_grant",
        sa.Column("id", _S(length=64), nullable=False),
        sa.Column("kind", _S(length=8), nullable=False),
        sa.Column("web_session_id", _S(length=64), nullable=False),
        sa.Column("device_id", _S(length=63), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("label", _S(length=63), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_unit_ui_grant_expires_at", "unit_ui_grant", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_unit_ui_grant_expires_at", table_name="unit_ui_grant")
    op.drop_table("unit_ui_grant")
