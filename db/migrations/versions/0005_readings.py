"""Readings of rows of characters (/v1/readings), and samples cut from a corrected reading.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "readings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("allowed_labels", sa.String(128), nullable=True),
        sa.Column("expected_length", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("characters", sa.JSON(), nullable=False),
        sa.Column("crops", sa.JSON(), nullable=False),
        sa.Column("corrected_text", sa.Text(), nullable=True),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("reading_id", BigId, nullable=True))
        batch.create_foreign_key(
            "fk_samples_reading_id", "readings", ["reading_id"], ["id"], ondelete="SET NULL"
        )
        batch.drop_constraint("ck_samples_source", type_="check")
        batch.create_check_constraint(
            "ck_samples_source", "source IN ('upload', 'canvas', 'correction', 'reading')"
        )


def downgrade() -> None:
    op.execute("DELETE FROM samples WHERE source = 'reading'")
    with op.batch_alter_table("samples") as batch:
        batch.drop_constraint("ck_samples_source", type_="check")
        batch.create_check_constraint(
            "ck_samples_source", "source IN ('upload', 'canvas', 'correction')"
        )
        batch.drop_constraint("fk_samples_reading_id", type_="foreignkey")
        batch.drop_column("reading_id")
    op.drop_table("readings")
