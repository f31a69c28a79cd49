"""The gate's fixed reference and label hygiene: when a model version was blessed as its label
set's baseline, and what the serving model read in each sample when it was stored (a sample
it found very unlikely under its label is suspect until an admin confirms it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("blessed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("samples") as batch:
        batch.add_column(
            sa.Column("suspect", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("model_label", sa.String(1), nullable=True))
        batch.add_column(sa.Column("model_probability", sa.Float(), nullable=True))
    # An existing registry's bundled model (the first version no run trained) is its baseline.
    op.execute(
        "UPDATE model_versions SET blessed_at = created_at WHERE version = "
        "(SELECT min(version) FROM model_versions WHERE training_run_id IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("model_probability")
        batch.drop_column("model_label")
        batch.drop_column("suspect")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("blessed_at")
