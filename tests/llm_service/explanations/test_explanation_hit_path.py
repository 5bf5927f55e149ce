"""The merged hit path attacked: the tenant comes from the key, resolved in the one transaction.

Real PostgreSQL as llm_app, the real application with its lifespan, OpenAI mocked with respx.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import respx
from explanation_helpers import OPENAI_URL, FakeModel, auth, model_settings, serve, week

from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.keys import hash_api_key, new_api_key
from llm_service.tenants.service import CreatedTenant, create_tenant

pytestmark = pytest.mark.usefixtures("openai_key")


def _body() -> dict[str, Any]:
    return {"subject": "channel_performance", "period": week(2)}


async def test_a_revoked_key_is_refused_on_the_hit_path(
    test_settings: Settings, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool
) -> None:
    tenant = await create_tenant(owner_pool, "revoked-key")
    with respx.mock(assert_all_called=False) as mock:
        mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            first = await client.post("/v1/explanations", json=_body(), headers=auth(tenant))
            hit = await client.post("/v1/explanations", json=_body(), headers=auth(tenant))
            assert (first.status_code, hit.status_code) == (200, 200)
            assert hit.json()["cache"] == "hit"
            # The key is rotated: the old one must no longer open the cached answer.
            async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
                await conn.execute(
                    "UPDATE tenants SET api_key_hash = $2 WHERE id = $1",
                    tenant.tenant_id,
                    hash_api_key(new_api_key()),
                )
            refused = await client.post("/v1/explanations", json=_body(), headers=auth(tenant))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert "explanation" not in refused.json()


async def test_a_key_of_tenant_a_never_reads_tenant_bs_cached_answer(
    test_settings: Settings, app_pool: asyncpg.Pool, owner_pool: asyncpg.Pool
) -> None:
    a = await create_tenant(owner_pool, "hit-path-a")
    b = await create_tenant(owner_pool, "hit-path-b")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            stored = await client.post("/v1/explanations", json=_body(), headers=auth(b))
            assert stored.status_code == 200 and stored.json()["cache"] == "miss"
            calls = route.call_count
            # Same body, same (empty) data, so the same fingerprint: only the key differs.
            asked = await client.post("/v1/explanations", json=_body(), headers=auth(a))
            assert asked.status_code == 200
            assert asked.json()["cache"] == "miss", "A was served B's cached answer"
            assert route.call_count > calls
            assert asked.json()["fingerprint"] == stored.json()["fingerprint"]


async def test_a_malformed_header_carrying_a_valid_key_is_refused(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    async with serve(test_settings, app_pool) as (_, client):
        for header in (f"Basic {tenant.api_key}", tenant.api_key, f"Bearer {tenant.api_key}x"):
            response = await client.post(
                "/v1/explanations", json=_body(), headers={"Authorization": header}
            )
            assert response.status_code == 401, header


async def test_a_repeated_request_hits_in_one_statement_with_the_same_answer(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            stored = await client.post("/v1/explanations", json=_body(), headers=auth(tenant))
            calls = route.call_count
            hit = await client.post("/v1/explanations", json=_body(), headers=auth(tenant))
    assert stored.status_code == hit.status_code == 200
    assert (stored.json()["cache"], hit.json()["cache"]) == ("miss", "hit")
    assert route.call_count == calls
    # The one-statement path answered: no separate auth / fingerprint / lookup round trips.
    phases = hit.headers["server-timing"]
    assert "hit;dur=" in phases and "auth;dur=" not in phases and "lookup;dur=" not in phases
    assert hit.json()["fingerprint"] == stored.json()["fingerprint"]
    assert hit.json()["explanation"] == stored.json()["explanation"]
    assert hit.json()["cache_match"] == {"question": None, "relation": "none", "agreement": {}}
