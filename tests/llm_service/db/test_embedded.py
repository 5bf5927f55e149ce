"""The embedded PostgreSQL: shared between processes, persistent, started safely in parallel."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import psycopg
    from llm_service.db.embedded import embedded_url, start_embedded
    server = start_embedded(Path(sys.argv[1]))
    with psycopg.connect(embedded_url(server), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(1)")  # CREATE IF NOT EXISTS itself races
        conn.execute("CREATE TABLE IF NOT EXISTS probe (v text)")
        if len(sys.argv) > 2:
            conn.execute("INSERT INTO probe VALUES (%s)", (sys.argv[2],))
        rows = [r[0] for r in conn.execute("SELECT v FROM probe ORDER BY v")]
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    print(json.dumps({"rows": rows, "postmaster": server.get_pid(), "version": version}))
    """
)


def _probe(data_dir: Path, *values: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, str(data_dir), *values],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_two_processes_starting_at_once_share_one_server(tmp_path: Path) -> None:
    first, second = _probe(tmp_path, "a"), _probe(tmp_path, "b")
    results = [_result(first), _result(second)]
    # Both wrote through the same cluster without corrupting it.
    assert {"a", "b"} <= set(results[0]["rows"]) | set(results[1]["rows"])  # type: ignore[arg-type]
    assert int(str(results[0]["version"])) >= 150000


def test_data_survives_a_restart(tmp_path: Path) -> None:
    _result(_probe(tmp_path, "kept"))
    # The first process exited, stopping the server; a new one starts it on the same data.
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
    again = _result(_probe(tmp_path))
    assert again["rows"] == ["kept"]


def test_a_second_process_joins_a_running_server(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from llm_service.db.embedded import start_embedded; "
            "s = start_embedded(Path(sys.argv[1])); print(s.get_pid(), flush=True); "
            "sys.stdin.readline()",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        postmaster = int(holder.stdout.readline())
        joined = _result(_probe(tmp_path, "x"))
        assert joined["postmaster"] == postmaster
        # The joining process exited; the server keeps running for the holder.
        assert (tmp_path / "pgdata" / "postmaster.pid").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    # The last process to leave stopped the server cleanly.
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
