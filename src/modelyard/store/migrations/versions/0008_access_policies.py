"""role bindings on a workspace, project or model; alias policies; N-approver approvals;
an index on one entity's audit records (alias history)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_entity", ["entity_type", "entity_id", "seq"])
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_bindings")),
        sa.UniqueConstraint("subject", "role", "scope", name="uq_role_bindings_grant"),
    )
    with op.batch_alter_table("role_bindings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_role_bindings_subject"), ["subject"], unique=False)
    op.create_table(
        "alias_policies",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.String(length=300), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("approvals", sa.Integer(), nullable=False),
        sa.Column("gates", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_policies")),
        sa.UniqueConstraint("name", name=op.f("uq_alias_policies_name")),
    )
    with op.batch_alter_table("alias_policies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alias_policies_scope"), ["scope"], unique=False)
    with op.batch_alter_table("pipeline_triggers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acts_as", sa.JSON(), nullable=True))
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("required", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(
            sa.Column("approved_by", sa.JSON(), server_default="[]", nullable=False)
        )
        batch_op.add_column(sa.Column("used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("used_by", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_triggers", schema=None) as batch_op:
        batch_op.drop_column("acts_as")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("used_by")
        batch_op.drop_column("used_at")
        batch_op.drop_column("approved_by")
        batch_op.drop_column("required")
    with op.batch_alter_table("alias_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alias_policies_scope"))
    op.drop_table("alias_policies")
    with op.batch_alter_table("role_bindings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_role_bindings_subject"))
    op.drop_table("role_bindings")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_entity")
