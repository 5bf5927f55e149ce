"""The `llm-service` command line, run as a real process against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from llm_service.db.urls import DatabaseUrls


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
    assert "004_llm_subsystem" in result.stdout


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
