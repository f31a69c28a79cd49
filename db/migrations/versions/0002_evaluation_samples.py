"""Samples kept for judging candidates are "evaluation" samples; "holdout" is only ever the
NIST holdout slices.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.alter_column("holdout", new_column_name="evaluation")


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.alter_column("evaluation", new_column_name="holdout")
