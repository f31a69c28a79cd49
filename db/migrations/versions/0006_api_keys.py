"""API keys with roles, and who stored each sample: trust comes from the key that stored a
sample (`trusted`), never from a field the client sends. A sample also records its decoded
pixels' hash (the same picture re-encoded is the same sample), and confirmations are indexed
(a suspect confirmed after a run counts toward the next one).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'labeller', 'client')", name="ck_api_keys_role"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("api_key_id", BigId, nullable=True))
        batch.add_column(sa.Column("uploader", sa.String(80), nullable=True))
        batch.add_column(
            sa.Column("trusted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("pixels_sha256", sa.String(64), nullable=True))
        batch.create_foreign_key(
            "fk_samples_api_key_id", "api_keys", ["api_key_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("uq_samples_pixels_sha256", ["pixels_sha256"], unique=True)
        batch.create_index("ix_samples_confirmed_at", ["confirmed_at"])


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_index("ix_samples_confirmed_at")
        batch.drop_index("uq_samples_pixels_sha256")
        batch.drop_constraint("fk_samples_api_key_id", type_="foreignkey")
        batch.drop_column("pixels_sha256")
        batch.drop_column("trusted")
        batch.drop_column("uploader")
        batch.drop_column("api_key_id")
    op.drop_table("api_keys")
