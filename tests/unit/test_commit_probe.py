"""streamguard.db.session.commit_probe: the SQLite change token the API's event hub stats."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from streamguard.db.session import commit_probe, make_engine


def test_the_token_changes_with_a_commit_and_not_without(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{(tmp_path / 'sg.db').as_posix()}")
    probe = commit_probe(engine)
    assert probe is not None
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        before = probe()
        with engine.connect() as conn:  # a read commits nothing
            conn.execute(sa.text("SELECT count(*) FROM t")).scalar()
        assert probe() == before
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert probe() != before
    finally:
        engine.dispose()


def test_no_probe_where_another_process_leaves_no_file_to_stat() -> None:
    assert commit_probe(make_engine("sqlite://")) is None
    assert commit_probe(make_engine("postgresql://sg@127.0.0.1:5432/sg")) is None
