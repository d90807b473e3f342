"""streamguard.db.session.CommitProbe: the SQLite change token the API's event hub asks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamguard.db.session import CommitProbe, commit_probe, make_engine


@pytest.fixture
def engine_and_probe(tmp_path: Path) -> Iterator[tuple[sa.Engine, CommitProbe]]:
    """A SQLite file's engine (WAL, as the app has it) and its commit probe."""
    engine = make_engine(f"sqlite:///{(tmp_path / 'sg.db').as_posix()}")
    probe = commit_probe(engine)
    assert probe is not None
    try:
        yield engine, probe
    finally:
        probe.close()
        engine.dispose()


def test_the_token_changes_with_a_commit_and_not_without(
        engine_and_probe: tuple[sa.Engine, CommitProbe]) -> None:
    engine, probe = engine_and_probe
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    before = probe()
    with engine.connect() as conn:  # a read commits nothing
        conn.execute(sa.text("SELECT count(*) FROM t")).scalar()
    assert probe() == before
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    assert probe() != before


def test_the_token_changes_when_the_commit_is_visible_not_when_the_log_is_written(
        engine_and_probe: tuple[sa.Engine, CommitProbe]) -> None:
    """The CI failure of the file-stat probe: a transaction's pages reach the write-ahead log
    before its commit is visible. A token taken in that gap must still equal the one before,
    so a reader that starts then (and sees the old state) is followed by another read."""
    engine, probe = engine_and_probe
    database = str(engine.url.database)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x BLOB)"))
    before = probe()
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("PRAGMA cache_size=1")  # spill: pages go to the log before COMMIT
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO t VALUES (?)", [(b"x" * 4000,)] * 200)
        assert Path(f"{database}-wal").stat().st_size > 200 * 4000  # written, not committed
        assert probe() == before
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert probe() != before


def test_a_locked_file_reads_as_busy_and_the_probe_recovers(tmp_path: Path) -> None:
    path = tmp_path / "sg.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE t (x INTEGER)")  # a rollback journal: a writer blocks readers
    probe = CommitProbe(str(path))
    try:
        first = probe()
        setup.execute("BEGIN EXCLUSIVE")
        assert probe() == CommitProbe.BUSY  # answered at once, not after a busy timeout
        setup.execute("INSERT INTO t VALUES (1)")
        setup.execute("COMMIT")
        after = probe()
        assert isinstance(first, int) and isinstance(after, int)
    finally:
        probe.close()
        setup.close()


def test_no_probe_where_another_process_leaves_no_file_to_stat() -> None:
    assert commit_probe(make_engine("sqlite://")) is None
    assert commit_probe(make_engine("postgresql://sg@127.0.0.1:5432/sg")) is None
