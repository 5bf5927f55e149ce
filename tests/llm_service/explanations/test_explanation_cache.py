"""POST /v1/explanations and its cache: misses, hits, scope, data changes, expiry, tenancy.

Real PostgreSQL (tenants with demo data, written as the owner), the real application with its
lifespan, the local embedding model, and OpenAI mocked with respx in its wire format.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import respx
from explanation_helpers import (
    MODEL,
    OPENAI_URL,
    PARAPHRASE,
    QUESTION,
    FakeModel,
    auth,
    model_settings,
    serve,
    week,
)

from llm_service.db.pool import tenant_transaction
from llm_service.explanations.prompt import PROMPT_VERSION
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.usefixtures("openai_key")


def _body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": "period_change",
        "channel": "facebook_paid",
        "metric": "revenue",
        "period": week(1),
        "question": QUESTION,
    }
    body.update(extra)
    return body


async def test_miss_then_hit_for_the_same_scope_and_a_paraphrase(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (app, client):
            first = await client.post("/v1/explanations", json=_body(), headers=auth(demo_tenant))
            again = await client.post(
                "/v1/explanations", json=_body(question=PARAPHRASE), headers=auth(demo_tenant)
            )
            same = await client.post("/v1/explanations", json=_body(), headers=auth(demo_tenant))
            vectors = app.state.explanations.vectors
            # The repeated question is found by its text: not embedded, not even looked up.
            assert (vectors.misses, vectors.hits) == (2, 0)
    assert route.call_count == 1
    miss, hit = first.json(), again.json()
    assert first.status_code == 200, miss
    assert miss["cache"] == "miss" and hit["cache"] == "hit" and same.json()["cache"] == "hit"
    assert miss["degraded"] is False and miss["degraded_reason"] is None
    assert miss["model"] == MODEL == hit["model"]
    assert Decimal(miss["cost_usd"]) > 0
    assert hit["cost_usd"] == "0"
    assert hit["explanation"] == miss["explanation"]
    # Why the cached answer applies: the stored question and the agreement.
    assert miss["cache_match"] is None
    assert hit["cache_match"]["question"] == QUESTION
    assert hit["cache_match"]["relation"] == "paraphrase"
    assert hit["cache_match"]["agreement"]["intent"] == "why"
    assert "word_order" in hit["cache_match"]["agreement"]["relations"]
    assert same.json()["cache_match"] == {
        "question": QUESTION,
        "relation": "exact",
        "agreement": {"relation": "exact"},
    }
    assert miss["explanation"]["summary"] == fake.summaries[0]
    assert miss["explanation"]["confidence"] == "high"
    assert miss["explanation"]["drivers"][0]["figure"] == "-1,234.56"
    # Citations come from the data, never from the model.
    citation = miss["explanation"]["citations"][0]
    assert citation["query"] == "period_comparison"
    assert citation["parameters"]["current"] == week(1)
    assert citation["parameters"]["previous"] == week(2)
    assert citation["parameters"]["channel"] == "facebook_paid"
    assert citation["figures"]["channels"][0]["channel"] == "facebook_paid"
    assert miss["period"] == week(1) and miss["comparison"] == week(2)
    assert miss["fingerprint"] == hit["fingerprint"] and len(miss["fingerprint"]) == 64
    assert float(first.headers["x-server-time-ms"]) > 0
    # A paraphrase: the one statement (fingerprint + exact lookup) missed, its fingerprint was
    # kept (no second fingerprint), the similar lookup ran in the transaction.
    phases = again.headers["server-timing"]
    assert "hit;dur=" in phases and "lookup;dur=" in phases and "fingerprint;dur=" not in phases
    # The prompt: the system prompt, then compact JSON with the question and the data.
    system, user = fake.prompts[0]
    assert "Use ONLY the figures" in system["content"]
    assert QUESTION in user["content"] and '"query":"period_comparison"' in user["content"]


async def test_another_channel_metric_or_range_is_a_miss_even_with_the_same_question(
    test_settings: Settings, app_pool: asyncpg.Pool, demo_tenant: CreatedTenant
) -> None:
    base = _body(period=week(3))
    variants = [
        base,
        {**base, "channel": "google_search_paid"},
        {**base, "metric": "conversions"},
        {**base, "period": week(4)},
        {**base, "comparison": week(5)},
        {**base, "attribution_model": "linear"},
        {**base, "subject": "channel_performance", "metric": "revenue"},
    ]
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            results = [
                (await client.post("/v1/explanations", json=v, headers=auth(demo_tenant))).json()
                for v in variants
            ]
            repeat = await client.post("/v1/explanations", json=base, headers=auth(demo_tenant))
    assert [r["cache"] for r in results] == ["miss"] * len(variants)
    assert route.call_count == len(variants)
    assert repeat.json()["cache"] == "hit"


async def test_new_data_in_the_period_makes_the_entry_stale(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
) -> None:
    body = _body(period=week(6), subject="channel_performance", metric="attributed_revenue")
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            first = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            cached = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            start = datetime.fromisoformat(week(6)["start"]).replace(tzinfo=UTC)
            async with tenant_transaction(owner_pool, demo_tenant.tenant_id) as conn:
                await conn.execute(
                    """
                    INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp,
                        event_type, channel, revenue_cents, idempotency_key)
                    VALUES ($1, $2, $2, 'purchase', 'facebook_paid', 4321, $3)
                    """,
                    demo_tenant.tenant_id,
                    start + timedelta(days=2, hours=3),
                    f"late-event-{start.date()}",
                )
            after = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
    assert [first.json()["cache"], cached.json()["cache"], after.json()["cache"]] == [
        "miss",
        "hit",
        "miss",
    ]
    assert after.json()["fingerprint"] != first.json()["fingerprint"]
    assert route.call_count == 2


async def test_an_expired_entry_is_not_served(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
) -> None:
    body = _body(period=week(7))
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            first = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            async with tenant_transaction(owner_pool, demo_tenant.tenant_id) as conn:
                expired = await conn.execute(
                    """
                    UPDATE explanation_cache SET expires_at = now() - interval '1 second'
                     WHERE tenant_id = $1 AND scope->'params'->>'start' = $2
                    """,
                    demo_tenant.tenant_id,
                    week(7)["start"],
                )
            assert expired == "UPDATE 1"
            after = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
        # A tiny TTL expires entries by itself.
        async with serve(model_settings(test_settings, explanation_cache_ttl_s=0.05), app_pool) as (
            _,
            client,
        ):
            short = _body(period=week(8))
            await client.post("/v1/explanations", json=short, headers=auth(demo_tenant))
            await _short_lived_entries_expired(app_pool, demo_tenant)
            late = await client.post("/v1/explanations", json=short, headers=auth(demo_tenant))
    assert first.json()["cache"] == "miss" and after.json()["cache"] == "miss"
    assert late.json()["cache"] == "miss"
    assert route.call_count == 4


async def test_another_tenant_never_gets_the_entry(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
    demo_tenant_b: CreatedTenant,
) -> None:
    body = _body(period=week(9))
    fake = FakeModel()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(OPENAI_URL).mock(side_effect=fake)
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            a = (await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))).json()
            a_again = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
            b = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant_b))
    b_json = b.json()
    assert a["cache"] == "miss" and a_again.json()["cache"] == "hit"
    # B holds equal data (same seed; the fingerprints differ by write times): the same scope
    # and question, yet a miss, computed from B's own data.
    assert b_json["cache"] == "miss"
    assert fake.calls == 2
    assert a["explanation"]["summary"] not in b.text
    assert b_json["explanation"]["summary"] == fake.summaries[1]
    # Each tenant's entry is its own, and RLS shows each only its own.
    for tenant, summary in ((demo_tenant, fake.summaries[0]), (demo_tenant_b, fake.summaries[1])):
        async with tenant_transaction(app_pool, tenant.tenant_id, readonly=True) as conn:
            rows = await conn.fetch(
                "SELECT tenant_id, explanation->>'summary' AS summary, prompt_version "
                "FROM explanation_cache WHERE scope->'params'->>'start' = $1",
                week(9)["start"],
            )
        assert [(r["tenant_id"], r["summary"]) for r in rows] == [(tenant.tenant_id, summary)]
        assert rows[0]["prompt_version"] == PROMPT_VERSION


async def test_requests_without_free_text_embed_nothing_and_hits_are_counted(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
) -> None:
    body = {"subject": "attribution_model_disagreement", "period": week(10)}
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (app, client):
            results = [
                (await client.post("/v1/explanations", json=body, headers=auth(demo_tenant)))
                for _ in range(4)
            ]
            vectors = app.state.explanations.vectors
            assert (vectors.hits, vectors.misses) == (0, 0)
        # Leaving the lifespan flushed the buffered hit counts.
    assert [r.json()["cache"] for r in results] == ["miss", "hit", "hit", "hit"]
    assert route.call_count == 1
    citation = results[0].json()["explanation"]["citations"][0]
    assert citation["query"] == "attribution_model_comparison"
    async with tenant_transaction(owner_pool, demo_tenant.tenant_id) as conn:
        count = await conn.fetchval(
            "SELECT cache_hit_count FROM explanation_cache "
            "WHERE tenant_id = $1 AND entity_type = 'attribution_model_disagreement' "
            "AND scope->'params'->>'start' = $2",
            demo_tenant.tenant_id,
            week(10)["start"],
        )
    assert count == 3


@pytest.mark.parametrize(
    ("subject", "query"),
    [("channel_performance", "channel_performance"), ("revenue_reconciliation", None)],
)
async def test_every_subject_is_explained_from_its_query(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    demo_tenant: CreatedTenant,
    subject: str,
    query: str | None,
) -> None:
    body = {"subject": subject, "period": week(11)}
    with respx.mock(assert_all_called=False) as mock:
        mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        async with serve(model_settings(test_settings), app_pool) as (_, client):
            response = await client.post("/v1/explanations", json=body, headers=auth(demo_tenant))
    assert response.status_code == 200, response.text
    citation = response.json()["explanation"]["citations"][0]
    assert citation["query"] == (query or "reconciliation_status")
    assert citation["figures"]


async def _short_lived_entries_expired(pool: asyncpg.Pool, tenant: CreatedTenant) -> None:
    """Until no entry due to expire within the minute is still live, on the database's clock."""

    async def expired() -> bool:
        async with tenant_transaction(pool, tenant.tenant_id) as conn:
            live = await conn.fetchval(
                "SELECT count(*) FROM explanation_cache WHERE expires_at > clock_timestamp() "
                "AND expires_at < clock_timestamp() + interval '1 minute'"
            )
        return bool(live == 0)

    await wait_until(expired, "the 0.05 s cache entry expired")
