"""Evidence from neighbours: each model version's neighbour index (NIST examples as it sees
them, core/neighbours.py), and why a sample was held as suspect, in words.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("neighbour_index", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("suspect_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("suspect_reason")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("neighbour_index")
