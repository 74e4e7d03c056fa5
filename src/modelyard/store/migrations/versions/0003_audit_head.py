"""audit head row

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:26:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    last = (
        op.get_bind()
        .execute(sa.text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"))
        .first()
    )
    op.bulk_insert(
        head, [{"id": 1, "seq": last[0] if last else 0, "hash": last[1] if last else GENESIS}]
    )


def downgrade() -> None:
    op.drop_table("audit_head")
