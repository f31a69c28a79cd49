"""Ids never come back on the embedded database: SQLite's AUTOINCREMENT on every table whose id
is generated. Without it SQLite hands a deleted last row's id to the next insert (a deleted
sample 154 and the next upload was 154 again). Postgres never reuses a sequence's values.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("samples", "training_runs", "model_versions", "readings", "api_keys")
# SQLite cannot reflect these expression indexes, so a table copied by batch mode loses them.
ONE_ROW_INDEXES = {
    "training_runs": ("uq_training_runs_one_open", "status IN ('queued', 'running')"),
    "model_versions": ("uq_model_versions_one_active", "status = 'active'"),
}


def _recreate_tables(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
        if table in ONE_ROW_INDEXES:
            name, where = ONE_ROW_INDEXES[table]
            op.create_index(
                name, table, [sa.text("(1)")], unique=True, sqlite_where=sa.text(where)
            )


def upgrade() -> None:
    _recreate_tables(autoincrement=True)


def downgrade() -> None:
    _recreate_tables(autoincrement=False)
