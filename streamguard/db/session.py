"""Engine and session factory for PostgreSQL (psycopg 3) and SQLite.

SQLite gets foreign keys, WAL (readers never block the writer), a 5 s busy timeout, and
SQLAlchemy-emitted BEGIN: the sqlite3 module's own transaction handling breaks SAVEPOINT and
transactional DDL, which tests (nested rollbacks) and migrations rely on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Run plain `postgresql://` / `postgres://` URLs with psycopg 3 (psycopg2 is not installed)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an Engine for `url`; extra keyword arguments go to `sqlalchemy.create_engine`."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(url, **kwargs)

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    # The API serves requests from a thread pool; each connection is used by one thread at a time.
    connect_args.setdefault("check_same_thread", False)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see module doc)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (handlers return rows after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def dialect_name(session: Session) -> str:
    """`postgresql` or `sqlite`: the backend a session talks to."""
    return session.get_bind().dialect.name
