"""each gateway worker's recent per-endpoint counters, for the dashboard's live charts

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_stats",
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("worker", "endpoint"),
    )
    op.create_index("ix_live_stats_endpoint", "live_stats", ["endpoint"])


def downgrade() -> None:
    op.drop_index("ix_live_stats_endpoint", table_name="live_stats")
    op.drop_table("live_stats")
