"""rollouts: progressive delivery with analysis, and the promotion a rollout releases

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    utc = sa.DateTime(timezone=True)
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("active_endpoint", sa.String(length=256), nullable=True),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("baseline", sa.String(length=1024), nullable=False),
        sa.Column("baseline_model", sa.String(length=256), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("inconclusive", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", utc, nullable=False),
        sa.Column("started_by", sa.String(length=256), nullable=False),
        sa.Column("acts_as", sa.JSON(), nullable=True),
        sa.Column("step_started_at", utc, nullable=False),
        sa.Column("reference_at", utc, nullable=True),
        sa.Column("next_analysis_at", utc, nullable=False),
        sa.Column("ended_at", utc, nullable=True),
        sa.Column("promotion_id", sa.String(length=26), nullable=True),
        sa.Column("endpoint_policy", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint("active_endpoint", name=op.f("uq_rollouts_active_endpoint")),
    )
    op.create_index("ix_rollouts_endpoint_started", "rollouts", ["endpoint", "started_at"])
    op.create_table(
        "rollout_analyses",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("rollout_id", sa.String(length=26), nullable=False),
        sa.Column("at", utc, nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("early", sa.Boolean(), nullable=False),
        sa.Column("baseline_requests", sa.Integer(), nullable=False),
        sa.Column("canary_requests", sa.Integer(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["rollouts.id"],
            name=op.f("fk_rollout_analyses_rollout_id_rollouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_analyses")),
    )
    op.create_index("ix_rollout_analyses_rollout_at", "rollout_analyses", ["rollout_id", "at"])
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rollout_id", sa.String(length=26), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_column("rollout_id")
    op.drop_index("ix_rollout_analyses_rollout_at", table_name="rollout_analyses")
    op.drop_table("rollout_analyses")
    op.drop_index("ix_rollouts_endpoint_started", table_name="rollouts")
    op.drop_table("rollouts")
