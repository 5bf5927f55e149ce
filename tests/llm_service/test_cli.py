"""The `llm-service` command line, run as a real process against the test database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from llm_service import cli
from llm_service.db.urls import DatabaseUrls
from llm_service.settings import Settings


def _run(urls: DatabaseUrls, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": urls.owner, "APP_DATABASE_URL": urls.app}
    return subprocess.run(
        [sys.executable, "-m", "llm_service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_tenants_create_prints_id_and_key_once(
    database_urls: DatabaseUrls, client: httpx.AsyncClient
) -> None:
    result = _run(database_urls, "tenants", "create", "Acme Retail", "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"tenant_id", "api_key"}
    me = await client.get(
        "/v1/tenants/me", headers={"Authorization": f"Bearer {created['api_key']}"}
    )
    assert me.status_code == 200
    assert me.json()["tenant_id"] == created["tenant_id"]
    assert me.json()["name"] == "Acme Retail"


def test_blank_tenant_name_is_refused(database_urls: DatabaseUrls) -> None:
    result = _run(database_urls, "tenants", "create", "   ", "--json")
    assert result.returncode != 0
    assert "blank" in result.stderr


def test_migrate_is_idempotent_at_head(database_urls: DatabaseUrls) -> None:
    result = _run(database_urls, "migrate")
    assert result.returncode == 0, result.stderr
    assert "012_run_rows_unlockable_by_app" in result.stdout


def test_verify_passes_on_a_migrated_database(database_urls: DatabaseUrls) -> None:
    result = _run(database_urls, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "RLS enabled, forced, policy on every tenant table" in result.stdout


def test_set_cap_changes_the_monthly_cap(database_urls: DatabaseUrls) -> None:
    created = json.loads(_run(database_urls, "tenants", "create", "Capped", "--json").stdout)
    result = _run(database_urls, "tenants", "set-cap", created["tenant_id"], "12.50")
    assert result.returncode == 0, result.stderr
    unknown = _run(database_urls, "tenants", "set-cap", "00000000-0000-0000-0000-000000000000", "1")
    assert unknown.returncode != 0


def test_serve_on_the_embedded_database_stops_it_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "APP_DATABASE_URL")}
    env.update({"LLM_SERVICE_DATA_DIR": str(tmp_path), "WORKERS_IN_PROCESS": "0"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = subprocess.Popen(
        [sys.executable, "-m", "llm_service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert serve.poll() is None, "serve exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve never answered /healthz"
            time.sleep(0.2)  # polling /healthz until the deadline
        postmaster = tmp_path / "pgdata" / "postmaster.pid"
        assert postmaster.exists()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
        # The last user of the embedded server was serve: the server is stopped, data kept.
        assert not postmaster.exists()
        assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    finally:
        if serve.poll() is None:
            serve.kill()


def test_out_of_range_flags_are_one_clear_line_and_exit_2(database_urls: DatabaseUrls) -> None:
    # Each would otherwise start something (a timeout of _run is the safety net): port 0 is
    # refused, not "any free port", since nobody could learn which port clients should use.
    for args, flag in (
        (("serve", "--no-migrate", "--port", "0"), "--port"),
        (("serve", "--no-migrate", "--port", "65536"), "--port"),
        (("worker", "--concurrency", "0"), "--concurrency"),
        (("worker", "--concurrency", "5001"), "--concurrency"),
    ):
        done = _run(database_urls, *args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert flag in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_a_bad_setting_names_its_variable_and_exits_2(database_urls: DatabaseUrls) -> None:
    for name, value in (("WORKER_CONCURRENCY", "20000"), ("PORT", "0"), ("MAX_HEADER_BYTES", "1")):
        done = subprocess.run(
            [sys.executable, "-m", "llm_service.cli", "worker"],
            env={**os.environ, "DATABASE_URL": database_urls.owner, name: value},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, (name, done.stderr[-2000:])
        assert done.stderr.count("\n") == 1 and name in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_secret_setting_is_named_without_its_value() -> None:
    with pytest.raises(ValidationError) as invalid:
        Settings(app_db_password=918273645)  # type: ignore[arg-type]  # not a string
    line = cli._settings_error(invalid.value)
    assert "APP_DB_PASSWORD" in line and "918273645" not in line
