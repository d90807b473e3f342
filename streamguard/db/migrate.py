"""Run the Alembic migrations from code (`streamguard up`), without the alembic executable.

    from streamguard.db.migrate import upgrade
    upgrade("sqlite:///.streamguard/streamguard.db")
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import streamguard

MIGRATIONS_DIR = Path(streamguard.__file__).resolve().parents[1] / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic Config for `url` that needs no alembic.ini."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"migrations not found at {MIGRATIONS_DIR}; install the "
                                "repository in editable mode (pip install -e .)")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%': URL-encoded passwords must be escaped.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` drops every table)."""
    command.downgrade(alembic_config(url), revision)
