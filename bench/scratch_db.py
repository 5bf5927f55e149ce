"""A freshly migrated database for a benchmark: embedded, or a scratch one on DATABASE_URL.

Not a benchmark itself (`bench/__main__.py` runs only `bench_*.py`).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded


@asynccontextmanager
async def migrated_database(prefix: str) -> AsyncIterator[str]:
    """The owner URL of a freshly migrated database, dropped (or deleted) afterwards.

    With DATABASE_URL set, a database `<prefix>_<random>` is created on that server; otherwise an
    embedded server is started in a temporary directory named after `prefix`.
    """
    admin = os.environ.get("DATABASE_URL")
    if admin:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = urlunsplit(urlsplit(admin)._replace(path="/" + name))
            migrate.upgrade(url)
            yield url
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    server = start_embedded(Path(tempfile.mkdtemp(prefix=f"{prefix}-")), cleanup="delete")
    try:
        url = embedded_url(server)
        migrate.upgrade(url)
        yield url
    finally:
        server.cleanup()
