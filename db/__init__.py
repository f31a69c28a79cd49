"""Database: SQLAlchemy models, sessions and Alembic migrations. Postgres is the source of truth."""
