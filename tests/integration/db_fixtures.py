"""Database fixtures for integration tests, over real PostgreSQL and SQLite.

Import the fixtures you need into a test module (tests/integration/conftest.py is owned
elsewhere). `db_url` is parametrized over both backends and migrated to head once per test
session; `session` wraps each test in a transaction that is rolled back (SAVEPOINTs for the
test's own commits). PostgreSQL is reached at STREAMGUARD_TEST_PG_ADMIN (default
postgres@127.0.0.1:5432); a fresh `streamguard_test_<random>` database is dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from streamguard.db.migrate import upgrade
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import create_tenant_key

PG_ADMIN_DSN = os.environ.get("STREAMGUARD_TEST_PG_ADMIN",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["postgresql", "sqlite"]


def sqlite_with_key(folder: Path, tenant_name: str) -> tuple[str, str]:
    """A migrated SQLite database in `folder` holding one tenant: (database URL, its API key),
    for an API started as a real process over it."""
    db_url = f"sqlite:///{(folder / 'streamguard.db').as_posix()}"
    upgrade(db_url)
    engine = make_engine(db_url)
    with make_session_factory(engine)() as session, session.begin():
        _tenant, key = create_tenant_key(session=session, tenant_name=tenant_name)
    engine.dispose()
    return db_url, key


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Create an empty PostgreSQL database; yield its SQLAlchemy URL; drop it afterwards."""
    name = f"streamguard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL unreachable at {PG_ADMIN_DSN}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database for the whole test session."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'streamguard.db'}"


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """A database of each backend, migrated to head."""
    fixture = {"postgresql": "pg_url", "sqlite": "sqlite_url"}[request.param]
    url: str = request.getfixturevalue(fixture)
    upgrade(url)
    return url


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend for one test (migration tests)."""
    if request.param == "postgresql":
        with fresh_pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose work is rolled back after the test; its commits release savepoints."""
    connection = engine.connect()
    outer = connection.begin()
    db = Session(bind=connection, join_transaction_mode="create_savepoint",
                 expire_on_commit=False)
    try:
        yield db
    finally:
        db.close()
        outer.rollback()
        connection.close()
