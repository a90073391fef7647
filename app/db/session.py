"""Engines and sessions for PostgreSQL (production) and SQLite (embedded).

SQLite is shared by the API, the worker and the reaper, each in its own
process: WAL mode, a busy timeout, and ``BEGIN IMMEDIATE`` for every
transaction so that two writers queue up instead of failing half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` with the pragmas and pool settings the service needs."""
    if url.startswith("sqlite"):
        ensure_sqlite_folder(url)
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return sa.create_engine(url, **kwargs)


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite database file (``./var/`` when embedded)."""
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # take transaction control from the driver, so "begin" below decides
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class QuietCloseSession(Session):
    """A session whose ``close`` survives a connection the database dropped.

    Closing rolls back what is open. When the server has already terminated
    the connection, that rollback fails although there is nothing left to
    undo, and SQLAlchemy has invalidated the connection. Raising then would
    break a response that the API has already started to send (a request's
    session closes after its response begins), so the error is dropped.
    """

    def close(self) -> None:
        try:
            super().close()
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise


_engines: dict[str, sa.Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def engine_for(url: str) -> sa.Engine:
    """One engine per URL and process."""
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def sessionmaker_for(url: str) -> sessionmaker[Session]:
    if url not in _sessionmakers:
        _sessionmakers[url] = sessionmaker(
            engine_for(url), class_=QuietCloseSession, expire_on_commit=False
        )
    return _sessionmakers[url]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on error."""
    with sessionmaker_for(url)() as session, session.begin():
        yield session


def dispose_all() -> None:
    """Close every pooled connection and forget the engines (after fork, at exit)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _sessionmakers.clear()


def insert_for(session: Session, entity: Any) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` on both databases."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the service supports these two
        raise RuntimeError(f"unsupported database dialect {name!r}")
    return insert(entity)
