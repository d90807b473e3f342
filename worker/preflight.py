"""Workers refuse to start misconfigured: checks run before the first task is consumed.

`preflight(settings)` checks that

- the database answers (within `db.connect_timeout_s`),
- its schema is migrated to the head revision of `migrations/` (what `streamguard db upgrade` or
  `streamguard up` leaves behind),
- the artifact store takes a write (a small object is put and deleted again),
- the broker answers (a real round trip, bounded by `broker.connect_timeout_s`).

If any fails it prints ONE line to stderr, `streamguard worker: refusing to start: <what>`
(every failed check, `; `-separated; URLs with their password masked), and exits with
`EXIT_CODE`. A worker that started anyway would take each task, fail it and acknowledge it,
leaving its job `queued` for good.

Hooked to Celery's `worker_init` signal (sent while the worker is being built, before it
connects its consumer), by importing this module at the end of `worker/celery_app.py`.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from celery.signals import worker_init

from streamguard import broker
from streamguard.settings import Settings, get_settings

#: The start of the line a refused worker prints (`streamguard up` looks for it).
PREFIX = "streamguard worker: refusing to start:"
#: sysexits' EX_CONFIG: a configuration error.
EXIT_CODE = 78
#: Where the store probe writes (one small object, deleted again).
PROBE_PREFIX = "_preflight"


class PreflightFailed(Exception):
    """One failed check; the message is a single line with no secret in it."""


def _one_line(text: object, secret: str | None = None) -> str:
    """`text` on one line (driver messages span several), without `secret`, at most 300 chars."""
    line = " ".join(str(text).split())
    if secret:
        line = line.replace(secret, "***")
    return line if len(line) <= 300 else line[:297] + "..."


def _password(url: str | None) -> str | None:
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


def safe_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: mask by hand
        secret = _password(url)
        return url.replace(f":{secret}@", ":***@") if secret else url


# --- the checks ----------------------------------------------------------------------------------

def check_database(settings: Settings) -> None:
    """The database answers and its schema is at the migrations' head revision."""
    import sqlalchemy as sa
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from streamguard.db.migrate import alembic_config
    from streamguard.db.session import make_engine, normalize_url

    url = normalize_url(settings.db.url)
    shown, secret = safe_url(url), _password(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not str(parsed.database).startswith("file:") \
            and not os.path.isfile(str(parsed.database)):
        # Checked before connecting: SQLite would create an empty file and report "unmigrated".
        raise PreflightFailed(f"database {shown} does not exist (no such file); create and "
                              "migrate it with `streamguard db upgrade` or `streamguard up`")
    try:
        heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    except Exception as exc:  # noqa: BLE001 - a broken install, named below
        raise PreflightFailed(f"cannot read the migrations ({_one_line(exc)}); install the "
                              "repository with `pip install -e .`") from exc
    from sqlalchemy import pool

    engine = make_engine(settings.db, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # noqa: BLE001 - refused, missing database, auth, timeout, ...
        cause = getattr(exc, "orig", None) or exc
        raise PreflightFailed(f"database {shown} is unreachable ({type(cause).__name__}: "
                              f"{_one_line(cause, secret)})") from exc
    finally:
        engine.dispose()
    if current != heads:
        at = ", ".join(sorted(current)) or "none (an empty database)"
        raise PreflightFailed(f"database {shown} is not migrated: its revision is {at}, the "
                              f"code needs {', '.join(sorted(heads))}; run `alembic upgrade "
                              "head` (SG_DB__URL set) first")


def check_store(settings: Settings) -> None:
    """The artifact store takes a small write (put, then delete)."""
    from streamguard.storage import store_from_uri

    where = settings.storage.uri  # file:// or s3:// URIs carry no secret
    key = f"{PROBE_PREFIX}/{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        store = store_from_uri(settings.storage.uri,
                               endpoint_url=settings.storage.s3_endpoint_url)
        store.put_bytes(b"streamguard worker preflight\n", key)
        store.delete(key)
    except Exception as exc:  # noqa: BLE001 - read-only, full, unreachable, bad URI, ...
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        raise PreflightFailed(f"artifact store {where} is not writable "
                              f"({_one_line(message)})") from exc


def check_broker(settings: Settings) -> None:
    """The broker answers (the same bounded probe as the API's /readyz)."""
    try:
        broker.check_broker(settings)
    except Exception as exc:  # noqa: BLE001 - refused, hung, auth, missing folders, ...
        where = "filesystem broker" if settings.broker.url is None else \
            f"broker {safe_url(settings.broker.url)}"
        secret = _password(settings.broker.url)
        raise PreflightFailed(f"{where} is unreachable ({type(exc).__name__}: "
                              f"{_one_line(exc, secret)})") from exc


CHECKS: tuple[Callable[[Settings], None], ...] = (check_database, check_store, check_broker)


def problems(settings: Settings) -> list[str]:
    """Every failed check's one-line reason (empty when the worker may start)."""
    found = []
    for check in CHECKS:
        try:
            check(settings)
        except PreflightFailed as exc:
            found.append(str(exc))
    return found


def preflight(settings: Settings) -> None:
    """Return when the worker may start; else print the one line and exit with EXIT_CODE."""
    found = problems(settings)
    if not found:
        return
    sys.stderr.write(f"{PREFIX} {'; '.join(found)}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_CODE)


@worker_init.connect
def _on_worker_init(**_kwargs: Any) -> None:
    preflight(get_settings())
