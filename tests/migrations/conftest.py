"""Fixtures for the migration tests: throwaway databases on the session's server."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from llm_service.db.urls import DatabaseUrls


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server (works for socket URLs too)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


@pytest.fixture
def scratch_database(database_urls: DatabaseUrls) -> Iterator[Callable[[str], DatabaseUrls]]:
    """Create empty databases on the session's server; each is dropped (WITH FORCE) afterwards.

    Roles are cluster-wide: the application role already exists and migrations grant it access.
    """
    created: list[str] = []

    def create(prefix: str) -> DatabaseUrls:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(database_urls.owner, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return DatabaseUrls(
            owner=with_database(database_urls.owner, name),
            app=with_database(database_urls.app, name),
        )

    yield create
    with psycopg.connect(database_urls.owner, autocommit=True) as conn:
        for name in created:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
