"""Initial schema: samples, training runs, model versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(1), nullable=False),
        sa.Column("submitted_label", sa.String(1), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "source IN ('upload', 'canvas', 'correction')", name="ck_samples_source"
        ),
        sa.UniqueConstraint("sha256", name="uq_samples_sha256"),
    )
    op.create_index("ix_samples_created_at_id", "samples", ["created_at", "id"])
    op.create_index("ix_samples_label_id", "samples", ["label", "id"])

    op.create_table(
        "training_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("full_retrain", sa.Boolean(), nullable=False),
        sa.Column("sample_watermark", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')",
            name="ck_training_runs_status",
        ),
    )
    op.create_index(
        "uq_training_runs_one_open",
        "training_runs",
        [sa.text("(1)")],
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
        sqlite_where=sa.text("status IN ('queued', 'running')"),
    )

    op.create_table(
        "model_versions",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("labels", sa.String(128), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=False),
        sa.Column("onnx", sa.LargeBinary(), nullable=False),
        sa.Column("onnx_sha256", sa.String(64), nullable=False),
        sa.Column("keras_weights", sa.LargeBinary(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column(
            "training_run_id",
            BigId,
            sa.ForeignKey("training_runs.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'candidate', 'rejected', 'retired')",
            name="ck_model_versions_status",
        ),
    )
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        [sa.text("(1)")],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_table("training_runs")
    op.drop_table("samples")
