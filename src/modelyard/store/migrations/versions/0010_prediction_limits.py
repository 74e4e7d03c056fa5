"""rate limits and daily quotas on predictions, their counters

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prediction_limits",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=True),
        sa.Column("token_id", sa.String(length=26), nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("daily_rows", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_prediction_limits_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_limits")),
        sa.UniqueConstraint("scope", name=op.f("uq_prediction_limits_scope")),
    )
    with op.batch_alter_table("prediction_limits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prediction_limits_token_id"), ["token_id"], unique=False
        )
    op.create_table(
        "prediction_quota_usage",
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "day", name=op.f("pk_prediction_quota_usage")),
    )


def downgrade() -> None:
    op.drop_table("prediction_quota_usage")
    with op.batch_alter_table("prediction_limits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prediction_limits_token_id"))
    op.drop_table("prediction_limits")
