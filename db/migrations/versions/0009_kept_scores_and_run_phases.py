"""Each version's scores on the NIST sets the gate compares, kept: a run scores only its
candidate, not the serving model and the baseline again. A running run's phase.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
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
        "model_scores",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
        ),
        sa.Column(
            "version",
            sa.Integer(),
            sa.ForeignKey("model_versions.version", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sets_key", sa.String(64), nullable=False),
        sa.Column("sets", sa.JSON(), nullable=False),
        sa.Column("test_predicted", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint("version", "sets_key", name="uq_model_scores_version_sets"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_model_scores_version", "model_scores", ["version"])
    op.add_column("training_runs", sa.Column("phase", sa.String(16), nullable=True))
    op.add_column("training_runs", sa.Column("phase_detail", sa.String(64), nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # SQLite drops a column by copying the table: keep its ids never reused (0008) ...
    copy = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    with op.batch_alter_table("training_runs", **(copy if sqlite else {})) as batch:
        batch.drop_column("phase_detail")
        batch.drop_column("phase")
    if sqlite:  # ... and its one-open-run index, which SQLite cannot reflect for the copy
        op.create_index(
            "uq_training_runs_one_open",
            "training_runs",
            [sa.text("(1)")],
            unique=True,
            sqlite_where=sa.text("status IN ('queued', 'running')"),
        )
    op.drop_index("ix_model_scores_version", table_name="model_scores")
    op.drop_table("model_scores")
