"""/metrics exposes the service's series, and they move when the matching work happens."""

from __future__ import annotations

import re

import asyncpg
import httpx
import pytest
import respx

from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if have == wanted:
            return float(match.group(3))
    return 0.0


async def test_metrics_expose_every_series(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    for name in (
        "llm_service_http_request_duration_seconds",
        "llm_service_llm_calls_total",
        "llm_service_llm_spend_usd_total",
        "llm_service_llm_reservations_in_flight",
        "llm_service_explanation_cache_total",
        "llm_service_run_outcomes_total",
        "llm_service_queue_depth",
    ):
        assert f"# TYPE {name}" in response.text


async def test_http_latency_is_recorded_by_route_template(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    before = sample(
        (await client.get("/metrics")).text,
        "llm_service_http_request_duration_seconds_count",
        method="GET",
        route="/v1/tenants/{tenant_id}",
        status="404",
    )
    await client.get(
        "/v1/tenants/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )
    after = sample(
        (await client.get("/metrics")).text,
        "llm_service_http_request_duration_seconds_count",
        method="GET",
        route="/v1/tenants/{tenant_id}",
        status="404",
    )
    assert after == before + 1


async def test_queue_depth_counts_queued_runs(
    client: httpx.AsyncClient, tenant: CreatedTenant
) -> None:
    await client.post(
        "/v1/investigations",
        json={"question": "what changed last week?"},
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )
    text = (await client.get("/metrics")).text
    assert sample(text, "llm_service_queue_depth", kind="investigation", status="queued") >= 1


@respx.mock
async def test_llm_calls_and_spend_move_with_a_call(
    client: httpx.AsyncClient,
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(update={"llm_model": "openai/gpt-4o-mini"})
    gateway = LlmGateway(settings, app_pool, build_price_book(settings))
    respx.post("https://api.openai.com/v1/chat/completions").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15},
            },
        )
    )
    labels = {"model": "openai/gpt-4o-mini", "endpoint": "explanations"}
    before = (await client.get("/metrics")).text
    await gateway.complete(
        LlmRequest(
            tenant_id=tenant.tenant_id,
            endpoint="explanations",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=20,
        )
    )
    after = (await client.get("/metrics")).text
    assert (
        sample(after, "llm_service_llm_calls_total", **labels, status="succeeded")
        == sample(before, "llm_service_llm_calls_total", **labels, status="succeeded") + 1
    )
    spent = sample(after, "llm_service_llm_spend_usd_total", **labels) - sample(
        before, "llm_service_llm_spend_usd_total", **labels
    )
    assert spent == pytest.approx(5 * 0.15e-6 + 10 * 0.6e-6)
    assert sample(after, "llm_service_llm_reservations_in_flight") == sample(
        before, "llm_service_llm_reservations_in_flight"
    )


async def test_an_empty_queue_is_zero_not_a_missing_series(client: httpx.AsyncClient) -> None:
    """Every job kind and live status is a series, 0 when no job is in it (an API-only node
    with an idle queue showed no llm_service_queue_depth at all)."""
    text = (await client.get("/metrics")).text
    for kind in ("investigation", "budget_optimization"):
        for status in ("queued", "running"):
            series = rf'^llm_service_queue_depth\{{kind="{kind}",status="{status}"\}} \d'
            assert re.search(series, text, re.M), (kind, status)
