"""The migrations are the schema: a database migrated to head matches db.models exactly, on
Postgres (production) and SQLite (the embedded default), and every migration steps back down."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, delete, insert, inspect
from sqlalchemy.exc import IntegrityError

from db.migrate import alembic_config
from db.models import Base
from testkit.stack import create_database, drop_database

# SQLite cannot reflect the partial unique indexes; Postgres compares them.
pytestmark = pytest.mark.filterwarnings("ignore:.*expression-based index")


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    database = create_database("hwr_migrations")
    try:
        yield database.url
    finally:
        drop_database(database.name)


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def test_head_matches_the_models_and_every_step_goes_back_down(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    assert differences(database_url) == []
    command.downgrade(config, "base")
    engine = create_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(config, "head")
    assert differences(database_url) == []


def test_a_deleted_rows_id_never_comes_back_and_one_run_stays_open(database_url: str) -> None:
    """Issue 30: on the embedded database a deleted last sample's id went to the next upload.
    The copy SQLite makes of each table for AUTOINCREMENT keeps the one-open-run index."""
    command.upgrade(alembic_config(database_url), "head")
    engine = create_engine(database_url)
    keys, runs_table = Base.metadata.tables["api_keys"], Base.metadata.tables["training_runs"]
    try:
        with engine.begin() as connection:

            def add_key(prefix: str) -> int:
                row = {"name": prefix, "role": "client", "prefix": prefix, "secret_sha256": "0"}
                return connection.execute(insert(keys).values(row)).inserted_primary_key[0]

            add_key("a")
            last = add_key("b")
            connection.execute(delete(keys).where(keys.c.id == last))
            assert add_key("c") > last
            connection.execute(insert(runs_table).values(status="queued", trigger="manual"))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(runs_table).values(status="running", trigger="manual"))
    finally:
        engine.dispose()
