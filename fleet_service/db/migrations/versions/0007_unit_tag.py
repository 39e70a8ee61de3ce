"""unit_tag: one row per tag of a unit, so the units carrying a tag are found exactly and through an index

Revision ID: 0007
Revises: 0006
"""

import re

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BATCH = 1000
# The rule of protocol.tags, frozen here for the backfill: a tag that breaks it can never be asked for.
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$")


def upgrade() -> None:
    op.create_table(
        "unit_tag",
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "tag"),
    )
    op.create_index("ix_unit_tag_tag", "unit_tag", ["tag"], unique=False)

    device = sa.table("device", sa.column("id", sa.String()), sa.column("tags", sa.JSON()))
    unit_tag = sa.table("unit_tag", sa.column("device_id", sa.String()), sa.column("tag", sa.String()))
    conn = op.get_bind()
    rows = []
    for device_id, tags in conn.execute(sa.select(device.c.id, device.c.tags)).all():
        wanted = [t for t in (tags if isinstance(tags, list) else []) if isinstance(t, str) and _TAG_RE.fullmatch(t)]
        rows += [{"device_id": device_id, "tag": t} for t in dict.fromkeys(wanted)]
    for start in range(0, len(rows), _BATCH):
        conn.execute(unit_tag.insert(), rows[start : start + _BATCH])


def downgrade() -> None:
    op.drop_index("ix_unit_tag_tag", table_name="unit_tag")
    op.drop_table("unit_tag")
