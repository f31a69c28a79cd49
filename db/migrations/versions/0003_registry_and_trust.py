"""Registry and gate integrity: the version a run was gated against, admin-confirmed
samples, and service keys (the evaluation key, generated once and kept here).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("gated_against", sa.Integer(), nullable=True))
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "service_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("service_keys")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("confirmed_at")
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("gated_against")
