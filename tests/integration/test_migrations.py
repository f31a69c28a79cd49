"""The migrations are the schema: a database migrated to head matches db.models exactly, on
Postgres (production) and SQLite (the embedded default), and every migration steps back down."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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
