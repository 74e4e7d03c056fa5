"""indexes for the dashboard's lookups: a dataset's runs and versions, a run's promotions

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 11:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_model_version_datasets_dataset", "model_version_datasets", ["dataset_id"])
    op.create_index("ix_run_inputs_dataset", "run_inputs", ["dataset_id"])
    op.create_index("ix_promotions_pipeline_run", "promotions", ["pipeline_run_id"])


def downgrade() -> None:
    op.drop_index("ix_promotions_pipeline_run", table_name="promotions")
    op.drop_index("ix_run_inputs_dataset", table_name="run_inputs")
    op.drop_index("ix_model_version_datasets_dataset", table_name="model_version_datasets")
