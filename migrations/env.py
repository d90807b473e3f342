"""Alembic environment: metadata from streamguard.db.models, URL from settings.

URL precedence: `alembic -x url=...`, then `sqlalchemy.url` set programmatically
(streamguard.db.migrate), then `get_settings().db.url`.
"""

from __future__ import annotations

import logging.config
from typing import Any

from alembic import context
from sqlalchemy import pool

from streamguard.db.models import Base, UtcDateTime
from streamguard.db.session import make_engine

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def render_item(type_: str, obj: Any, _autogen_context: Any) -> str | bool:
    """Render models.UtcDateTime as a plain column type, so revisions never import the app."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   _compare_to: Any) -> bool:
    """Leave Celery's result tables alone (the inference queue's `db+` result backend makes
    `celery_taskmeta` and `celery_tasksetmeta` in the same database): autogenerate would
    otherwise offer to drop them."""
    return not (type_ == "table" and reflected and name is not None
                and name.startswith("celery_"))


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        from streamguard.settings import get_settings

        url = get_settings().db.url
    return url


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`)."""
    url = database_url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"),
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    is_sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if is_sqlite:
            # Batch migrations copy and drop tables; with foreign keys on, that would cascade.
            # The pragma is a no-op inside a transaction, so set it on the raw connection first.
            connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA foreign_keys=OFF")
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=is_sqlite, compare_type=True,
                          render_item=render_item, include_object=include_object,
                          # We emit BEGIN ourselves (session.make_engine), so SQLite DDL is
                          # transactional too: a failed migration leaves no half-made schema.
                          transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
