"""Run the Alembic migrations (as the owner) and tell whether a database is at the head."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from llm_service.db import queries
from llm_service.db.urls import sqlalchemy_url

# Shipped inside the package (llm_service/migrations), so an installed wheel can migrate.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config(owner_url: str) -> Config:
    """An Alembic configuration for the repository's migrations against `owner_url`."""
    # Revision files import their shared SQL helpers (llm_service/migrations/sqlhelpers.py) by name.
    if str(MIGRATIONS_DIR) not in sys.path:
        sys.path.insert(0, str(MIGRATIONS_DIR))
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(owner_url).replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def _heads() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config("postgresql://x@/x")).get_heads())


def heads() -> list[str]:
    """The migration heads of the repository (there must be exactly one)."""
    return list(_heads())


def upgrade(owner_url: str, revision: str = "head") -> None:
    """Migrate up to `revision`."""
    command.upgrade(alembic_config(owner_url), revision)


def downgrade(owner_url: str, revision: str = "base") -> None:
    """Migrate down to `revision`."""
    command.downgrade(alembic_config(owner_url), revision)


def current_revisions(owner_url: str) -> list[str]:
    """The revisions recorded in the database's alembic_version table (empty if none)."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        exists = conn.execute(queries.ALEMBIC_TABLE_EXISTS).fetchone()
        if not exists or not exists[0]:
            return []
        return [row[0] for row in conn.execute(queries.ALEMBIC_REVISIONS)]


def set_app_role_password(owner_url: str, role: str, password: str) -> None:
    """Give the application role its login password (for servers that require one)."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(queries.alter_role_password(role, password))
