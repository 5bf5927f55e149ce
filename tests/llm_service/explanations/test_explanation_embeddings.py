"""A provider embedding model (EMBEDDING_MODEL other than local): through the gateway, billed."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import asyncpg
import httpx
import numpy as np
import pytest
import respx
from explanation_helpers import OPENAI_URL, QUESTION, FakeModel, auth, model_settings, serve, week

from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant

pytestmark = pytest.mark.usefixtures("openai_key")
EMBEDDINGS_URL = "https://api.openai.com/v1/embeddings"
EMBEDDING_MODEL = "openai/text-embedding-3-small"


def _vector(text: str) -> list[float]:
    """A deterministic pseudo-embedding of `text` (1536 dimensions, not normalised)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return (np.random.default_rng(seed).standard_normal(1536) * 3).tolist()


def _embeddings(request: httpx.Request) -> httpx.Response:
    """OpenAI's embeddings endpoint."""
    texts = json.loads(request.content)["input"]
    return httpx.Response(
        200,
        json={
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(t)}
                for i, t in enumerate(texts)
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 9, "total_tokens": 9},
        },
    )


async def test_questions_are_embedded_by_the_provider_priced_and_recorded(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    body = {"subject": "channel_performance", "period": week(1), "question": QUESTION}
    settings = model_settings(test_settings, embedding_model=EMBEDDING_MODEL)
    with respx.mock(assert_all_called=False) as mock:
        chat = mock.post(OPENAI_URL).mock(side_effect=FakeModel())
        embed = mock.post(EMBEDDINGS_URL).mock(side_effect=_embeddings)
        async with serve(settings, app_pool) as (_, client):
            first = (await client.post("/v1/explanations", json=body, headers=auth(tenant))).json()
            again = (await client.post("/v1/explanations", json=body, headers=auth(tenant))).json()
    assert (first["cache"], again["cache"]) == ("miss", "hit")
    assert chat.call_count == 1
    assert embed.call_count == 1  # the repeated question came from the in-process LRU
    assert again["cost_usd"] == "0"
    async with tenant_transaction(app_pool, tenant.tenant_id, readonly=True) as conn:
        calls = await conn.fetch(
            "SELECT endpoint, model, status, cost_cents FROM llm_api_calls ORDER BY endpoint"
        )
        entry = await conn.fetchrow("SELECT embedding_model, embedding_dim FROM explanation_cache")
    assert [(c["endpoint"], c["status"]) for c in calls] == [
        ("embeddings", "succeeded"),
        ("explanations", "succeeded"),
    ]
    assert all(c["cost_cents"] > 0 for c in calls)
    # The request's cost is the model call plus the question's embedding, exactly.
    assert Decimal(first["cost_usd"]) == sum(c["cost_cents"] for c in calls) / 100
    assert (entry["embedding_model"], entry["embedding_dim"]) == (EMBEDDING_MODEL, 1536)
