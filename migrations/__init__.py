"""StreamGuard's Alembic migrations, shipped in the package (`streamguard db upgrade`).

A package only so wheels carry `env.py` and `versions/`; Alembic loads them by path
(streamguard/db/migrate.py finds this folder with importlib.resources).
"""
