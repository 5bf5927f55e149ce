"""Single flight: concurrent identical misses make ONE provider call, in one process and in two."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest
import respx
from explanation_helpers import OPENAI_URL, QUESTION, FakeModel, auth, model_settings, serve, week

from llm_service.db.pool import tenant_transaction
from llm_service.db.urls import DatabaseUrls
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

pytestmark = pytest.mark.usefixtures("openai_key")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROCESS = HERE / "explanation_flight_process.py"
MOCK_LATENCY_S = 0.3


async def _provider_calls(pool: asyncpg.Pool, tenant: CreatedTenant) -> int:
    """Rows in llm_api_calls for the tenant's explanations: one per provider attempt."""
    async with tenant_transaction(pool, tenant.tenant_id, readonly=True) as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE endpoint = 'explanations'"
        )
    return count


async def test_fifty_concurrent_identical_misses_make_one_call(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    body = {
        "subject": "period_change",
        "channel": "facebook_paid",
        "period": week(11),
        "metric": "attributed_revenue",
        "question": QUESTION,
    }
    fake = FakeModel(delay=MOCK_LATENCY_S)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            responses = await asyncio.gather(
                *(
                    client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
                    for _ in range(50)
                )
            )
    assert route.call_count == 1
    assert [r.status_code for r in responses] == [200] * 50
    answers = [r.json() for r in responses]
    assert {a["explanation"]["summary"] for a in answers} == {fake.summaries[0]}
    assert sorted(a["cache"] for a in answers) == ["hit"] * 49 + ["miss"]
    assert not any(a["degraded"] for a in answers)
    assert sum(float(a["cost_usd"]) > 0 for a in answers) == 1


async def test_two_processes_share_one_call(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    database_urls: DatabaseUrls,
    tenant: CreatedTenant,
) -> None:
    body = {"subject": "channel_performance", "period": week(2), "question": QUESTION}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", "OPENAI_API_KEY": "sk-test"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROCESS),
        database_urls.app,
        tenant.api_key,
        json.dumps(body),
        "25",
        str(MOCK_LATENCY_S),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), 120)
        assert ready.strip() == b"ready", ready
        fake = FakeModel(delay=MOCK_LATENCY_S)
        with respx.mock(assert_all_called=False) as mock:
            mock.post(OPENAI_URL).mock(side_effect=fake)
            async with serve(model_settings(test_settings), app_pool) as (_, client):
                process.stdin.write(b"go\n")
                await process.stdin.drain()
                ours: list[httpx.Response] = await asyncio.gather(
                    *(
                        client.post("/v1/explanations", json=body, headers=auth(tenant))
                        for _ in range(25)
                    )
                )
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-3000:]
    theirs = json.loads(out.decode().strip().splitlines()[-1])
    assert theirs["status"] == [200] * 25
    assert [r.status_code for r in ours] == [200] * 25
    caches = [r.json()["cache"] for r in ours] + theirs["cache"]
    summaries = {r.json()["explanation"]["summary"] for r in ours} | set(theirs["summary"])
    # Exactly one provider call across both processes: the ledger counts every attempt.
    assert await _provider_calls(app_pool, tenant) == 1
    assert fake.calls + theirs["calls"] == 1
    assert sorted(caches) == ["hit"] * 49 + ["miss"]
    assert len(summaries) == 1
    # The requests overlapped: the process that did not call the provider waited for the other
    # one's call (through the advisory lock) instead of finding a finished entry.
    waited = theirs["latency_ms"] if fake.calls else [r.json()["latency_ms"] for r in ours]
    assert max(waited) >= MOCK_LATENCY_S * 1000 / 2
