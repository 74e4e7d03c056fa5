"""Ed25519 signatures of model versions; trusted signing keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_signing_keys_name")),
    )
    op.create_table(
        "model_signatures",
        sa.Column("version_id", sa.String(length=26), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("payload_digest", sa.String(length=80), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_signatures_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_model_signatures")),
    )
    with op.batch_alter_table("model_signatures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_signatures_key_id"), ["key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_signatures_key_id"))
    op.drop_table("model_signatures")
    op.drop_table("signing_keys")
