"""Run the Alembic migrations from code (`streamguard db upgrade`, `streamguard up`), without the
alembic executable or an alembic.ini: from a checkout or an installed wheel, in any folder.

    from streamguard.db.migrate import upgrade
    upgrade("sqlite:///.streamguard/streamguard.db")
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from alembic import command
from alembic.config import Config


def migrations_dir() -> Path:
    """The `migrations` package's folder (env.py, versions/): the repository's own in a checkout
    or an editable install, the wheel's copy in site-packages otherwise."""
    try:
        folder = Path(str(importlib.resources.files("migrations")))
    except ModuleNotFoundError:  # an editable install made before `migrations` was a package
        folder = Path(__file__).resolve().parents[2] / "migrations"
    if not (folder / "env.py").is_file():
        raise FileNotFoundError(f"migrations not found at {folder}: reinstall streamguard "
                                "(its wheel ships the `migrations` package)")
    return folder


def alembic_config(url: str) -> Config:
    """An Alembic Config for `url` that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolates '%': URL-encoded passwords must be escaped.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` drops every table)."""
    command.downgrade(alembic_config(url), revision)
