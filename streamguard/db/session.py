"""Engine and session factory for PostgreSQL (psycopg 3) and SQLite, bounded by `DbSettings`.

Every engine waits a bounded time for everything (`streamguard.settings.DbSettings`):

- PostgreSQL: libpq `connect_timeout`, a server-side `statement_timeout` set on connect (a
  `-c` option, so it holds for every statement of every pooled connection), a pool of
  `pool_size` + `max_overflow` connections and at most `pool_timeout_s` of waiting for one,
  TCP keepalives, a ping before reusing a pooled connection that sat idle (`ping_idle_s`),
  and sessions in UTC.
- SQLite: foreign keys, WAL (readers never block the writer), a busy timeout of
  `sqlite_busy_timeout_ms`, and the pool's wait for a connection as long as that.

SQLite transactions (the embedded mode, many API threads and a worker on one file): the
sqlite3 module's own transaction handling breaks SAVEPOINT and transactional DDL, so BEGIN is
emitted here, lazily, by the first statement of each transaction:

- a transaction whose first statement writes (INSERT, UPDATE, DELETE, DDL, SAVEPOINT, or a
  `SELECT ... FOR UPDATE`, the repositories' "I am about to write" lock) begins IMMEDIATE: it
  takes the write lock up front, waiting up to the busy timeout for it;
- a transaction that starts by reading begins DEFERRED (a WAL snapshot, no lock), so GETs,
  polling SSE streams and downloads never hold the write lock;
- when such a read transaction is about to write, it is ended (it wrote nothing) and a BEGIN
  IMMEDIATE starts the rest. A DEFERRED transaction would instead try to upgrade its stale
  snapshot and fail at once with "database is locked" whenever another writer committed in
  between (the 500s the issue measured at 50 concurrent submits). The reads before the
  write then come from an earlier snapshot, which is what PostgreSQL's default READ
  COMMITTED gives too: the code already guards its writes with compare-and-set updates,
  unique constraints and `FOR UPDATE` (which, on SQLite, is the point where the lock is taken).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from streamguard.settings import DbSettings

#: `Connection.info` key holding the SQLite transaction state: "pending" (SQLAlchemy began a
#: transaction, no BEGIN sent yet), "deferred" (reading) or "immediate" (holds the write lock).
_SQLITE_TXN = "streamguard_sqlite_txn"
#: First keywords of statements that write (or, SAVEPOINT, are about to).
_WRITE_KEYWORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "CREATE",
                             "DROP", "ALTER", "SAVEPOINT", "REINDEX", "VACUUM"})
#: TCP keepalives (PostgreSQL): a peer that vanished is noticed in about a minute.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                 "keepalives_count": 3}


def normalize_url(url: str) -> str:
    """Run plain `postgresql://` / `postgres://` URLs with psycopg 3 (psycopg2 is not installed)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


_JSON_DECODER = json.JSONDecoder()


def load_json(document: bytes | str) -> Any:
    """The engines' JSON column reader: `json.loads` of the text, decoded from UTF-8 here.

    psycopg hands JSON columns over as bytes, and `json.loads(bytes)` first sniffs their
    encoding (UTF-8, 16 or 32): 4.2 us for a `[]` against 1.4 us from text. A job-list page
    reads a JSON column (`warnings`) on each of its 51 rows. PostgreSQL sends UTF-8: the
    engine's connections ask for it (`client_encoding`)."""
    return _JSON_DECODER.decode(document.decode() if isinstance(document, bytes) else document)


def make_engine(db: str | DbSettings, **kwargs: Any) -> Engine:
    """Create an Engine for `db` (a URL, or `settings.db`); extra keyword arguments go to
    `sqlalchemy.create_engine` and win over the settings.

    A bare URL gets `DbSettings`' default timeouts and pool size; pass `settings.db` to use the
    deployment's.
    """
    settings = DbSettings(url=db) if isinstance(db, str) else db
    url = normalize_url(settings.url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, settings, kwargs)

    connect_args = dict(kwargs.pop("connect_args", {}))
    if parsed.get_backend_name() == "postgresql":
        connect_args.setdefault("connect_timeout", max(2, int(settings.connect_timeout_s)))
        # `-c statement_timeout=...` on connect; an `options` already in the URL is kept.
        options = [str(connect_args.get("options") or parsed.query.get("options") or "")]
        options.append(f"-c statement_timeout={settings.statement_timeout_ms}")
        # Sessions in UTC: psycopg then tags timestamps with `datetime.UTC` itself, which
        # `UtcDateTime` passes through as is (a server zone such as Etc/UTC came back as a
        # ZoneInfo that cost a conversion per value: reading a 50-job list page took 0.68 ms
        # of CPU with it, 0.61-0.63 ms without).
        options.append("-c TimeZone=UTC")
        connect_args["options"] = " ".join(o for o in options if o)
        for name, value in PG_KEEPALIVES.items():
            connect_args.setdefault(name, value)
        connect_args.setdefault("client_encoding", "utf8")  # what `load_json` decodes
        kwargs.setdefault("json_deserializer", load_json)
    ping_idle = (parsed.get_backend_name() == "postgresql" and settings.ping_idle_s > 0
                 and "pool_pre_ping" not in kwargs)
    kwargs.setdefault("pool_pre_ping", not ping_idle)
    if "poolclass" not in kwargs:  # NullPool (migrations, CLI) takes no sizes
        kwargs.setdefault("pool_size", settings.pool_size)
        kwargs.setdefault("max_overflow", settings.max_overflow)
        kwargs.setdefault("pool_timeout", settings.pool_timeout_s)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    if ping_idle:
        ping_after_idle(engine, settings.ping_idle_s)
    return engine


#: `ConnectionRecord.info` key: when the connection went back to the pool (time.monotonic()),
#: None while it has never been checked in since it was opened.
_IDLE_SINCE = "streamguard_idle_since"


def ping_after_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before reuse only when it sat idle `idle_s` or longer
    (`DbSettings.ping_idle_s`); a failed ping replaces it and every connection opened before it,
    as `pool_pre_ping` does.

    `pool_pre_ping` pings at EVERY checkout: a round trip and about a tenth of the CPU of a
    one-query API request (py-spy, a 50-job list page), spent under load on connections that
    were in use a few milliseconds earlier.
    """
    dialect = engine.dialect

    @sa.event.listens_for(engine, "connect")
    def _opened(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = None  # fresh: nothing to ping

    @sa.event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _reused(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise sa.exc.InvalidatePoolError(f"ping after {idle_s} s idle failed: {exc}") from exc
        if not alive:
            raise sa.exc.InvalidatePoolError(f"ping after {idle_s} s idle failed")


def _sqlite_in_memory(database: str | None) -> bool:
    """A SQLite URL's database that is no file of its own (`:memory:` or a `file:` URI)."""
    return not database or database == ":memory:" or database.startswith("file:")


def _sqlite_engine(url: str, database: str | None, settings: DbSettings,
                   kwargs: dict[str, Any]) -> Engine:
    if not _sqlite_in_memory(database):
        assert database is not None
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        if "poolclass" not in kwargs:
            # Writers queue for the file's lock anyway; the pool's queue in front of it is the
            # fair one (SQLite's busy handler polls, and an unlucky thread keeps losing), so it
            # caps the contenders, and waits as long as the busy timeout would.
            kwargs.setdefault("pool_size", settings.pool_size)
            kwargs.setdefault("max_overflow", settings.max_overflow)
            kwargs.setdefault("pool_timeout",
                              max(settings.pool_timeout_s, settings.sqlite_busy_timeout_ms / 1000))
    busy_ms = settings.sqlite_busy_timeout_ms
    connect_args = dict(kwargs.pop("connect_args", {}))
    # The API serves requests from a thread pool; each connection is used by one thread at a time.
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", busy_ms / 1000)
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see module doc)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.info[_SQLITE_TXN] = "pending"  # BEGIN waits for the first statement

    @sa.event.listens_for(engine, "commit")
    @sa.event.listens_for(engine, "rollback")
    def _on_end(conn: sa.Connection) -> None:
        conn.info.pop(_SQLITE_TXN, None)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before_execute(conn: sa.Connection, cursor: Any, statement: str, _parameters: Any,
                        context: Any, _executemany: bool) -> None:
        state = conn.info.get(_SQLITE_TXN)
        if state is None or state == "immediate":
            return
        writes = _writes(statement, context)
        if state == "pending":
            cursor.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            conn.info[_SQLITE_TXN] = "immediate" if writes else "deferred"
        elif writes:  # "deferred": it only read so far; end that snapshot, take the lock
            cursor.execute("COMMIT")
            conn.info[_SQLITE_TXN] = "pending"  # if BEGIN IMMEDIATE times out, nothing is open
            cursor.execute("BEGIN IMMEDIATE")
            conn.info[_SQLITE_TXN] = "immediate"

    return engine


def _writes(statement: str, context: Any) -> bool:
    """Whether a statement writes (or locks for a write: SAVEPOINT, SELECT ... FOR UPDATE)."""
    if context is not None:
        if context.isinsert or context.isupdate or context.isdelete or context.isddl:
            return True
        compiled = getattr(context, "compiled", None)
        if getattr(getattr(compiled, "statement", None), "_for_update_arg", None) is not None:
            return True
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    return bool(words) and words[0].upper() in _WRITE_KEYWORDS


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (handlers return rows after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def read_engine(engine: Engine) -> Engine:
    """`engine` for requests that only read. On PostgreSQL its statements run in autocommit:
    no BEGIN before the first one and no ROLLBACK when the connection goes back to the pool
    (two round trips of a one-query request). Each statement reads one snapshot, as every
    statement does under READ COMMITTED, so a reader sees nothing it would not see in a
    transaction; never write through it (each statement would commit on its own). SQLite keeps
    its own transaction handling (`_sqlite_engine`). Shares `engine`'s pool."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on `read_engine(engine)`, for requests that only read."""
    return sessionmaker(bind=read_engine(engine), expire_on_commit=False)


def execute_columns(db: Session | Connection, statement: sa.Executable,
                    params: dict[str, Any] | None = None) -> sa.CursorResult[*tuple[Any, ...]]:
    """`db.execute(statement, params)` for a statement that reads or writes COLUMNS (no ORM
    entity to load or synchronise). With a Session: on its connection and transaction, after
    the same autoflush, without the ORM's per-statement layer (compile state, result wrapping,
    execute events); with a Connection (a read that needs no ORM at all), on it.

    That layer is most of the Python work of a small statement: a 51-row page of job summaries
    read this way took 0.95-1.23 ms of CPU against 1.08-1.60 through `session.execute`
    (minimum and median of 20 alternating rounds, 2-core AMD EPYC).
    """
    if isinstance(db, Connection):
        return db.execute(statement, params)
    if db.autoflush:
        db.flush()  # what session.execute does first (returns at once when nothing is new)
    return db.connection().execute(statement, params)


def dialect_name(session: Session) -> str:
    """`postgresql` or `sqlite`: the backend a session talks to."""
    return session.get_bind().dialect.name


class CommitProbe:
    """For a SQLite file: a cheap "did anything commit?" check, `PRAGMA data_version` on a
    connection of its own (about 2 us; no table is read).

    SQLite documents `data_version` for exactly this: on one connection, it differs between two
    calls when another connection committed in between. It changes when a commit becomes
    VISIBLE to readers. An earlier probe stat'ed the database file and its write-ahead log, and
    the log grows while the commit is being written, before the commit is visible: a reader
    that started in that gap saw the old state while the probe already reported the new one, so
    the commit waited for the next timed poll (a CI failure, reproduced about 1 in 4 runs under
    CPU load).

    The connection is opened on first use and never writes; `BUSY` is the token while SQLite
    answers "locked" (a checkpoint or recovery holds the file), so the caller reads (and, in
    its own thread, waits) rather than missing a change. Not thread-safe: one caller (the API's
    event loop) uses it."""

    BUSY = "busy"

    def __init__(self, database: str) -> None:
        self.database = database
        self._conn: sqlite3.Connection | None = None

    def __call__(self) -> int | str:
        try:
            if self._conn is None:
                # timeout=0: never block the caller's event loop on the file's lock
                self._conn = sqlite3.connect(self.database, timeout=0, isolation_level=None,
                                             check_same_thread=False)
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            # A new connection counts from its own start: this one is done with.
            self.close()
            return self.BUSY

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def commit_probe(engine: Engine) -> CommitProbe | None:
    """The engine's `CommitProbe`; None for PostgreSQL or an in-memory database (another
    process's commit leaves nothing to see: it has its own database)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or _sqlite_in_memory(database):
        return None
    assert database is not None
    return CommitProbe(database)
