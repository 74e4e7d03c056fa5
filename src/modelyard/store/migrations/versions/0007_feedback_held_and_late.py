"""feedback held until its prediction is logged; late labels re-evaluate closed windows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 21:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_feedback",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("searched_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_feedback")),
        sa.UniqueConstraint("endpoint", "request_id", "row", name="uq_pending_feedback_prediction"),
    )
    with op.batch_alter_table("pending_feedback", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pending_feedback_endpoint_status", ["endpoint", "status"], unique=False
        )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index(
            "ix_feedback_endpoint_received_at", ["endpoint", "received_at"], unique=False
        )
    with op.batch_alter_table("monitor_watermarks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("labels_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_watermarks", schema=None) as batch_op:
        batch_op.drop_column("labels_until")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_endpoint_received_at")
    with op.batch_alter_table("pending_feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_pending_feedback_endpoint_status")
    op.drop_table("pending_feedback")
