"""Engine and sessions, built once per process from Settings."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from core.config import get_settings


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # pre_ping: a connection that died with a Postgres restart is replaced, not handed out.
    # connect_timeout: a request fails fast with 503 while the database is away.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=5,
        connect_args={"connect_timeout": 3},
    )


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@contextmanager
def unit_of_work() -> Iterator[Session]:
    """One transaction: a session committed when the block ends, rolled back if it raises.
    Domain functions take the session and only flush; this (or the request's `get_db`) is
    where a transaction ends."""
    with get_sessionmaker().begin() as session:
        yield session


def get_db() -> Iterator[Session]:
    """A request's unit of work (api/deps.py: SessionDep, scope "function"): committed once the
    route has returned and before its reply is sent; an error (a 4xx refusal too) rolls back
    whatever the route wrote."""
    with get_sessionmaker()() as session:
        yield session
        session.commit()


_AFTER_COMMIT = "after_commit"


def after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` once the session's transaction commits (publish a message naming a row it
    wrote: the worker must find the row); dropped if the transaction rolls back."""
    session.connection()  # begins the transaction if none has: the action belongs to one
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for action in session.info.pop(_AFTER_COMMIT, []):
        action()


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_commit(session: Session, previous: SessionTransaction) -> None:
    # Only the outermost transaction's end drops them: a savepoint or a failed flush rolled
    # back inside it leaves the transaction, and its actions, standing.
    if previous.parent is None:
        session.info.pop(_AFTER_COMMIT, None)


def dialect_insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (Postgres here, SQLite for the local run)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
