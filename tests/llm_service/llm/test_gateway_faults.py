"""The gateway under provider faults: every attempt is a ledger row, settled money-safely.

Providers are mocked with respx at the HTTP layer in their real wire formats (OpenAI chat
completions, Anthropic messages); the ledger, its trigger and the monthly rollup are the real
PostgreSQL ones. After every test the tenant's monthly row must equal the sum of its settled
calls exactly (fn_reconcile_monthly_costs), and no reservation may be left pending.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx
from pydantic import BaseModel

from budgets.ceiling import CeilingReached, RunCeiling
from budgets.estimate import worst_case_cost
from budgets.money import usd_to_cents
from budgets.prices import UnpricedModelError
from llm_service.costs.ledger_repository import MonthlyCapExceeded
from llm_service.db.pool import tenant_transaction
from llm_service.llm import retry
from llm_service.llm.gateway import LlmGateway, LlmRequest, ProviderUnavailable, ToolCall
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.pricing import build_price_book
from llm_service.llm.structured import InvalidModelOutput, complete_structured
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers import stall

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
MILLION = Decimal(1_000_000)

# ---------------------------------------------------------------------------------------------
# Wire formats
# ---------------------------------------------------------------------------------------------


def openai_completion(
    content: str | None = "ok",
    prompt_tokens: int = 12,
    completion_tokens: int = 3,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A chat completion body as OpenAI sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """An error response as OpenAI sends it."""
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    return httpx.Response(
        status,
        json={"error": {"message": message, "type": kind, "param": None, "code": None}},
        headers=headers,
    )


def anthropic_message(
    content: list[dict[str, Any]], stop_reason: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    """A Messages API body as Anthropic sends it."""
    return {
        "id": "msg_01test",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def sent_body(route: respx.Route, index: int = -1) -> dict[str, Any]:
    """The JSON body of a request the mocked provider received."""
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def stalled(seconds: float = 30.0) -> stall.Stalled:
    """A provider that answers a completion only after `seconds` (see tests.helpers.stall)."""
    return stall.Stalled(seconds, lambda: httpx.Response(200, json=openai_completion()))


def spy_on_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the gateway's retry backoff chooses, in order (the sleeping is tenacity's)."""
    waits: list[float] = []
    make = retry.ProviderBackoff  # as the fixtures left it

    def recording_backoff(*args: Any, **kwargs: Any) -> Callable[[Any], float]:
        backoff = make(*args, **kwargs)

        def wait(state: Any) -> float:
            chosen = backoff(state)
            waits.append(chosen)
            return chosen

        return wait

    monkeypatch.setattr(retry, "ProviderBackoff", recording_backoff)
    return waits


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jittered backoff of at most 10-20 ms (Retry-After is still honoured as sent)."""
    monkeypatch.setattr(
        retry, "ProviderBackoff", functools.partial(retry.ProviderBackoff, initial=0.01)
    )


@pytest.fixture
def openai_settings(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 3}
    )


@pytest.fixture
def anthropic_settings(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    return test_settings.model_copy(
        update={"llm_model": "anthropic/claude-haiku-4-5", "llm_max_attempts": 3}
    )


@pytest.fixture
def make_gateway(openai_settings: Settings, app_pool: asyncpg.Pool) -> Callable[..., LlmGateway]:
    """A gateway on the OpenAI settings with some of them changed."""

    def make(**updates: Any) -> LlmGateway:
        settings = openai_settings.model_copy(update=updates)
        return LlmGateway(settings, app_pool, build_price_book(settings))

    return make


def request_for(
    tenant: CreatedTenant,
    content: str = "Why did paid social revenue drop last week?",
    *,
    max_tokens: int = 50,
    **fields: Any,
) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant.tenant_id,
        endpoint="explanations",
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        **fields,
    )


async def ledger(pool: asyncpg.Pool, tenant_id: UUID) -> list[asyncpg.Record]:
    """The tenant's llm_api_calls rows, oldest first."""
    async with tenant_transaction(pool, tenant_id) as conn:
        return list(await conn.fetch("SELECT * FROM llm_api_calls ORDER BY created_at, attempt"))


async def assert_reconciled(pool: asyncpg.Pool, tenant_id: UUID) -> None:
    """Nothing pending; the monthly row is exactly the sum of the settled calls."""
    async with tenant_transaction(pool, tenant_id) as conn:
        pending = await conn.fetchval("SELECT count(*) FROM llm_api_calls WHERE status = 'pending'")
        settled = await conn.fetchval(
            "SELECT coalesce(sum(cost_cents), 0) FROM llm_api_calls WHERE status <> 'pending'"
        )
        monthly = await conn.fetchval(
            "SELECT coalesce(sum(total_cost_cents), 0) FROM llm_monthly_costs"
        )
        rows = await conn.fetch(
            "SELECT * FROM fn_reconcile_monthly_costs() WHERE tenant_id = $1", tenant_id
        )
    assert pending == 0
    assert monthly == settled
    for row in rows:
        assert row["recorded_cost_cents"] == row["computed_cost_cents"]
        assert row["recorded_calls"] == row["computed_calls"]
        assert row["breakdowns_match"] is True


def assert_estimated_worst_case(row: asyncpg.Record) -> None:
    """Billing unknown: the attempt is counted at the worst case it reserved."""
    assert row["reserved_cents"] > 0
    assert row["cost_cents"] == row["reserved_cents"]
    assert row["cost_is_estimate"] is True
    assert row["settled_at"] is not None


def assert_not_billed(row: asyncpg.Record) -> None:
    """The provider answered with an error status: nothing is owed."""
    assert row["status"] == "failed"
    assert row["cost_cents"] == 0
    assert row["cost_is_estimate"] is False
    assert row["settled_at"] is not None


def exact_cents(gateway: LlmGateway, input_tokens: int, output_tokens: int) -> Decimal:
    price = gateway.price()
    return usd_to_cents(
        Decimal(input_tokens) * price.input_per_token
        + Decimal(output_tokens) * price.output_per_token
    )


# ---------------------------------------------------------------------------------------------
# Successful calls in each provider's wire format
# ---------------------------------------------------------------------------------------------


@respx.mock
async def test_openai_tool_calls_are_parsed(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    arguments = '{"channel": "paid_social", "days": 7}'
    route = respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(
            200,
            json=openai_completion(
                None,
                40,
                18,
                tool_calls=[
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "channel_metrics", "arguments": arguments},
                    }
                ],
            ),
        )
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "channel_metrics",
                "description": "Revenue and spend of one channel.",
                "parameters": {
                    "type": "object",
                    "properties": {"channel": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["channel"],
                },
            },
        }
    ]
    result = await gateway.complete(request_for(tenant, tools=tools))

    assert result.tool_calls == [
        ToolCall(id="call_abc123", name="channel_metrics", arguments=arguments)
    ]
    assert result.finish_reason == "tool_calls"
    assert result.content is None
    body = sent_body(route)
    assert body["tools"][0]["function"]["name"] == "channel_metrics"
    assert body["max_tokens"] == 50
    assert (result.input_tokens, result.output_tokens) == (40, 18)
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "succeeded"
    assert row["cost_cents"] == exact_cents(gateway, 40, 18)
    assert row["cost_is_estimate"] is False
    assert row["provider_request_id"] == "chatcmpl-test"
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_anthropic_success_is_priced_exactly(
    anthropic_settings: Settings, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = LlmGateway(anthropic_settings, app_pool, build_price_book(anthropic_settings))
    price = gateway.price()
    assert (price.input_per_token * MILLION, price.output_per_token * MILLION) == (1, 5)
    route = respx.post(ANTHROPIC_URL).mock(
        return_value=httpx.Response(
            200,
            json=anthropic_message(
                [{"type": "text", "text": "Paid social fell after the budget cut."}],
                "end_turn",
                input_tokens=12,
                output_tokens=37,
            ),
        )
    )
    result = await gateway.complete(request_for(tenant, max_tokens=300))

    assert result.content == "Paid social fell after the budget cut."
    assert result.finish_reason == "stop"
    assert result.tool_calls == []
    # 1 USD per 1M input tokens, 5 USD per 1M output tokens, exactly.
    assert result.cost_usd == (Decimal(12) * 1 + Decimal(37) * 5) / MILLION
    request = route.calls.last.request
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert sent_body(route)["max_tokens"] == 300
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "succeeded"
    assert row["provider"] == "anthropic"
    assert (row["input_tokens"], row["output_tokens"]) == (12, 37)
    assert row["cost_cents"] == Decimal("0.0197")
    assert row["cost_is_estimate"] is False
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_anthropic_tool_use_becomes_tool_calls(
    anthropic_settings: Settings, tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = LlmGateway(anthropic_settings, app_pool, build_price_book(anthropic_settings))
    respx.post(ANTHROPIC_URL).mock(
        return_value=httpx.Response(
            200,
            json=anthropic_message(
                [
                    {"type": "text", "text": "Let me look at the channel."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A",
                        "name": "channel_metrics",
                        "input": {"channel": "paid_social", "days": 7},
                    },
                ],
                "tool_use",
                input_tokens=20,
                output_tokens=40,
            ),
        )
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "channel_metrics",
                "description": "Revenue and spend of one channel.",
                "parameters": {"type": "object", "properties": {"channel": {"type": "string"}}},
            },
        }
    ]
    result = await gateway.complete(request_for(tenant, tools=tools))

    [call] = result.tool_calls
    assert (call.id, call.name) == ("toolu_01A", "channel_metrics")
    assert json.loads(call.arguments) == {"channel": "paid_social", "days": 7}
    assert result.finish_reason == "tool_calls"
    assert result.cost_usd == (Decimal(20) * 1 + Decimal(40) * 5) / MILLION
    await assert_reconciled(app_pool, tenant.tenant_id)


# ---------------------------------------------------------------------------------------------
# HTTP error statuses: not billed, transient ones retried
# ---------------------------------------------------------------------------------------------


@respx.mock
async def test_rate_limit_honours_retry_after_then_succeeds(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(
        side_effect=[
            openai_error(429, "Rate limit reached", {"retry-after": "0.3"}),
            httpx.Response(200, json=openai_completion("fine", 10, 5)),
        ]
    )
    waits = spy_on_backoff(monkeypatch)
    result = await gateway.complete(request_for(tenant))

    assert waits == [0.3]  # the wait honoured Retry-After (not the jittered backoff)
    assert route.call_count == 2
    assert result.attempts == 2
    assert result.content == "fine"
    failed, succeeded = await ledger(app_pool, tenant.tenant_id)
    assert_not_billed(failed)
    assert failed["attempt"] == 1
    assert failed["error_type"] == "RateLimitError"
    assert failed["error_message"].startswith("HTTP 429")
    assert succeeded["status"] == "succeeded"
    assert succeeded["attempt"] == 2
    assert succeeded["cost_cents"] == exact_cents(gateway, 10, 5)
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        monthly = await conn.fetchrow("SELECT * FROM llm_monthly_costs")
    assert monthly["total_cost_cents"] == failed["cost_cents"] + succeeded["cost_cents"]
    assert monthly["total_calls"] == 2
    assert monthly["estimated_cost_cents"] == 0
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_three_503s_raise_provider_unavailable_and_charge_nothing(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway(llm_max_attempts=3)
    route = respx.post(OPENAI_URL).mock(return_value=openai_error(503, "overloaded"))
    ceiling = RunCeiling(Decimal("0.05"))

    with pytest.raises(ProviderUnavailable) as raised:
        await gateway.complete(request_for(tenant), ceiling=ceiling)

    assert raised.value.status == 503
    assert route.call_count == 3
    rows = await ledger(app_pool, tenant.tenant_id)
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert_not_billed(row)
        assert row["error_message"].startswith("HTTP 503")
    assert ceiling.spent == 0
    assert ceiling.outstanding == 0
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_client_error_is_not_retried_nor_billed(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(return_value=openai_error(400, "bad request"))

    # A non-transient provider error reaches the caller as litellm raised it.
    with pytest.raises(load_litellm().BadRequestError) as raised:
        await gateway.complete(request_for(tenant))

    assert retry.status_code(raised.value) == 400
    assert route.call_count == 1
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert_not_billed(row)
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
@pytest.mark.parametrize("status", [503, 429])
async def test_only_tenacity_retries_and_max_tokens_is_always_sent(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
) -> None:
    """max_retries=0 reaches the SDK: with one attempt allowed, exactly one HTTP request."""
    gateway = make_gateway(llm_max_attempts=1, llm_request_timeout_s=7.5)
    route = respx.post(OPENAI_URL).mock(
        return_value=openai_error(status, "try later", {"retry-after": "0"})
    )
    litellm = load_litellm()
    real = litellm.acompletion
    seen: list[dict[str, Any]] = []

    async def spy(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return await real(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", spy)

    with pytest.raises(ProviderUnavailable):
        await gateway.complete(request_for(tenant, max_tokens=77))

    [kwargs] = seen
    assert (kwargs["max_retries"], kwargs["num_retries"]) == (0, 0)
    assert (kwargs["max_tokens"], kwargs["timeout"]) == (77, 7.5)
    assert route.call_count == 1
    assert sent_body(route)["max_tokens"] == 77
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert_not_billed(row)
    assert row["max_tokens"] == 77
    await assert_reconciled(app_pool, tenant.tenant_id)


# ---------------------------------------------------------------------------------------------
# Timeouts and deadlines: billing unknown, counted at the worst case
# ---------------------------------------------------------------------------------------------


@respx.mock
@pytest.mark.parametrize("attempts", [1, 2])
async def test_timeout_is_counted_at_its_worst_case(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    attempts: int,
) -> None:
    gateway = make_gateway(llm_request_timeout_s=0.3, llm_max_attempts=attempts)
    # Answers at 2 s: one loop timer after the 0.3 s request timeout (timers fire in order, so
    # this is no race): an answered request means the timeout did not cut it off.
    provider = stalled(2.0)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    ceiling = RunCeiling(Decimal("0.05"))

    # The code keeps the built-in TimeoutError (not ProviderUnavailable) once attempts run out.
    with pytest.raises(TimeoutError):
        await gateway.complete(request_for(tenant), ceiling=ceiling)

    assert len(provider.arrivals) == attempts
    assert (provider.cut_off, provider.answered) == (attempts, 0)
    rows = await ledger(app_pool, tenant.tenant_id)
    assert len(rows) == attempts
    for row in rows:
        assert row["status"] == "timed_out"
        assert row["error_type"] == "TimeoutError"
        assert_estimated_worst_case(row)
    assert usd_to_cents(ceiling.spent) == sum(r["cost_cents"] for r in rows)
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
@pytest.mark.parametrize("request_timeout", [0.3, 5.0])
async def test_no_attempt_runs_past_the_deadline(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    request_timeout: float,
) -> None:
    gateway = make_gateway(llm_request_timeout_s=request_timeout, llm_max_attempts=3)
    # Answers at 2 s: after the 0.5 s deadline, before a 5 s request timeout (loop timers fire
    # in order): an answered request means an attempt ran past the deadline.
    provider = stalled(2.0)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    deadline = time.monotonic() + 0.5

    with pytest.raises(TimeoutError):
        await gateway.complete(request_for(tenant), deadline=deadline)

    assert provider.arrivals
    assert (provider.cut_off, provider.answered) == (len(provider.arrivals), 0)
    assert all(arrival < deadline for arrival in provider.arrivals)
    rows = await ledger(app_pool, tenant.tenant_id)
    assert len(rows) == len(provider.arrivals)
    for row in rows:
        assert row["status"] == "timed_out"
        assert_estimated_worst_case(row)
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_no_attempt_starts_when_the_deadline_is_gone(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))

    with pytest.raises(TimeoutError):
        await gateway.complete(request_for(tenant), deadline=time.monotonic() + 0.01)

    assert not route.called
    assert await ledger(app_pool, tenant.tenant_id) == []


# ---------------------------------------------------------------------------------------------
# Unreadable answers, missing usage, cut connections
# ---------------------------------------------------------------------------------------------

MALFORMED = {
    "invalid_json": lambda: httpx.Response(
        200,
        content=b'{"id": "chatcmpl-x", "choices": [',
        headers={"content-type": "application/json"},
    ),
    "missing_choices": lambda: httpx.Response(
        200,
        json={k: v for k, v in openai_completion().items() if k != "choices"},
    ),
}


@respx.mock
@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_body_is_an_error_counted_at_worst_case(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    kind: str,
) -> None:
    gateway = make_gateway(llm_max_attempts=2)
    route = respx.post(OPENAI_URL).mock(side_effect=lambda request: MALFORMED[kind]())

    with pytest.raises(ProviderUnavailable):
        await asyncio.wait_for(gateway.complete(request_for(tenant)), timeout=10)

    assert route.call_count == 2
    rows = await ledger(app_pool, tenant.tenant_id)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "failed"
        # litellm calls this "HTTP 500", but the provider answered 200: it may have billed it.
        assert_estimated_worst_case(row)
        assert not row["error_message"].startswith("HTTP")
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_answer_without_choices_is_billed_and_reported(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    body = openai_completion(prompt_tokens=10, completion_tokens=0)
    body["choices"] = []
    respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=body))

    with pytest.raises(ProviderUnavailable):
        await gateway.complete(request_for(tenant))

    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "succeeded"
    assert row["cost_cents"] == exact_cents(gateway, 10, 0)
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_missing_usage_is_counted_at_worst_case(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    body = {k: v for k, v in openai_completion("hello").items() if k != "usage"}
    respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=body))

    result = await gateway.complete(request_for(tenant))

    assert result.content == "hello"
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "succeeded"
    assert_estimated_worst_case(row)
    assert row["input_tokens"] is None and row["output_tokens"] is None
    assert usd_to_cents(result.cost_usd) == row["cost_cents"]
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        estimated = await conn.fetchval("SELECT estimated_cost_cents FROM llm_monthly_costs")
    assert estimated == row["cost_cents"]
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
@pytest.mark.parametrize("error", [httpx.RemoteProtocolError, httpx.ConnectError])
async def test_cut_connection_is_retried_and_recorded(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    error: type[httpx.TransportError],
) -> None:
    gateway = make_gateway(llm_max_attempts=3)
    route = respx.post(OPENAI_URL).mock(
        side_effect=[
            error("connection dropped"),
            httpx.Response(200, json=openai_completion("back", 15, 4)),
        ]
    )

    result = await gateway.complete(request_for(tenant))

    assert result.content == "back"
    assert result.attempts == 2
    assert route.call_count == 2
    cut, succeeded = await ledger(app_pool, tenant.tenant_id)
    assert cut["status"] == "failed"
    if error is httpx.ConnectError:
        # The connection was never made: the request cannot have been billed.
        assert_not_billed(cut)
    else:
        # The request may have reached the provider before the connection dropped.
        assert_estimated_worst_case(cut)
    assert succeeded["status"] == "succeeded"
    assert succeeded["cost_cents"] == exact_cents(gateway, 15, 4)
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_connection_cut_on_every_attempt_raises_provider_unavailable(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway(llm_max_attempts=2)
    route = respx.post(OPENAI_URL).mock(side_effect=httpx.RemoteProtocolError("peer closed"))

    with pytest.raises(ProviderUnavailable):
        await gateway.complete(request_for(tenant))

    assert route.call_count == 2
    for row in await ledger(app_pool, tenant.tenant_id):
        assert_estimated_worst_case(row)
    await assert_reconciled(app_pool, tenant.tenant_id)


# ---------------------------------------------------------------------------------------------
# Cancellation
# ---------------------------------------------------------------------------------------------


@respx.mock
async def test_cancelled_call_is_settled_at_worst_case(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    provider = stalled(30.0)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    ceiling = RunCeiling(Decimal("0.05"))
    task = asyncio.create_task(gateway.complete(request_for(tenant), ceiling=ceiling))
    await asyncio.wait_for(provider.arrived.wait(), 60)  # the request is in flight
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(provider.arrivals) == 1
    assert (provider.cut_off, provider.answered) == (1, 0)
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "cancelled"
    assert_estimated_worst_case(row)
    assert usd_to_cents(ceiling.spent) == row["cost_cents"]
    assert ceiling.outstanding == 0
    await assert_reconciled(app_pool, tenant.tenant_id)


# ---------------------------------------------------------------------------------------------
# Money limits before any request
# ---------------------------------------------------------------------------------------------


@respx.mock
async def test_monthly_cap_refuses_before_any_request(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    gateway = make_gateway()
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_cap_cents = $2 WHERE id = $1",
            tenant.tenant_id,
            Decimal("0.001"),
        )
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))
    ceiling = RunCeiling(Decimal("0.05"))

    with pytest.raises(MonthlyCapExceeded) as raised:
        await gateway.complete(
            request_for(tenant, "Mail me at jane.doe@example.com"), ceiling=ceiling
        )

    assert raised.value.cap_cents == Decimal("0.001")
    assert raised.value.needed_cents > Decimal("0.001")
    assert not route.called
    assert await ledger(app_pool, tenant.tenant_id) == []
    assert ceiling.outstanding == 0 and ceiling.spent == 0
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        # The findings of a call never sent were rolled back with its reservation.
        assert await conn.fetchval("SELECT count(*) FROM pii_audit_findings") == 0
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_run_ceiling_shrinks_max_tokens_to_fit(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(200, json=openai_completion("short", 14, 100))
    )
    limit = Decimal("0.0001")
    ceiling = RunCeiling(limit)
    request = request_for(tenant, max_tokens=100_000)

    result = await gateway.complete(request, ceiling=ceiling)

    sent = sent_body(route)["max_tokens"]
    price = gateway.price()
    input_tokens = gateway.count_tokens(request.messages, None)
    margin = ceiling.margin_for(price)
    # The largest max_tokens whose worst case fits in the ceiling, exactly.
    assert 64 <= sent < 100_000
    assert worst_case_cost(price, input_tokens, sent, margin) <= limit
    assert worst_case_cost(price, input_tokens, sent + 1, margin) > limit
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["max_tokens"] == sent
    assert row["reserved_cents"] == usd_to_cents(worst_case_cost(price, input_tokens, sent, margin))
    assert ceiling.spent == result.cost_usd <= limit
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_tiny_run_ceiling_refuses_before_any_request(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))

    with pytest.raises(CeilingReached) as raised:
        await gateway.complete(request_for(tenant), ceiling=RunCeiling(Decimal("0.000001")))

    assert "openai/gpt-4o-mini" in raised.value.reason
    assert "ceiling" in raised.value.reason
    assert raised.value.needed_usd > raised.value.available_usd
    assert not route.called
    assert await ledger(app_pool, tenant.tenant_id) == []


# ---------------------------------------------------------------------------------------------
# Prices at start-up
# ---------------------------------------------------------------------------------------------


def test_unpriced_model_is_refused_at_start_up(openai_settings: Settings) -> None:
    settings = openai_settings.model_copy(update={"llm_model": "openai/unknown-model-xyz"})

    with pytest.raises(UnpricedModelError) as raised:
        build_price_book(settings)

    message = str(raised.value)
    assert "openai/unknown-model-xyz" in message
    assert "never treated as free" in message
    assert "LLM_PRICE_OVERRIDES" in message


@respx.mock
async def test_explicit_zero_price_override_is_accepted(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    model = "openai/unknown-model-xyz"
    gateway = make_gateway(llm_model=model, llm_price_overrides={model: (Decimal(0), Decimal(0))})
    price = gateway.price()
    assert (price.input_per_token, price.output_per_token) == (0, 0)
    route = respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(200, json=openai_completion("local", 9, 2))
    )

    result = await gateway.complete(request_for(tenant, max_tokens=40))

    assert result.cost_usd == 0
    assert sent_body(route)["max_tokens"] == 40
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert (row["status"], row["cost_cents"], row["cost_is_estimate"]) == ("succeeded", 0, False)
    await assert_reconciled(app_pool, tenant.tenant_id)


# ---------------------------------------------------------------------------------------------
# PII never leaves the process
# ---------------------------------------------------------------------------------------------

RAW_PII = (
    "jane.doe@example.com",
    "+1 415 555 2671",
    "415 555 2671",
    "4111 1111 1111 1111",
    "4111111111111111",
)


def assert_no_raw_pii(text: str) -> None:
    for raw in RAW_PII:
        assert raw not in text


@respx.mock
async def test_pii_is_redacted_before_the_provider_and_audited(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))
    prompt = (
        "Customer jane.doe@example.com (phone +1 415 555 2671) paid with card "
        "4111 1111 1111 1111. Why was the order attributed to email?"
    )

    result = await gateway.complete(request_for(tenant, prompt))

    body = route.calls.last.request.content.decode()
    assert_no_raw_pii(body)
    for kind in ("email", "phone", "card_number"):
        assert f"[REDACTED:{kind}]" in body
    assert {f.kind for f in result.pii_findings} == {"email", "phone", "card_number"}
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        findings = await conn.fetch("SELECT * FROM pii_audit_findings")
        calls = await conn.fetch("SELECT c::text AS row FROM llm_api_calls c")
    assert {f["finding_kind"] for f in findings} == {"email", "phone", "card_number"}
    for finding in findings:
        assert finding["source"] == "llm_guard"
        assert finding["tenant_id"] == tenant.tenant_id
        for value in finding.values():
            if isinstance(value, str):
                assert_no_raw_pii(value)
    [call] = calls
    assert_no_raw_pii(call["row"])
    assert "[REDACTED:email]" in call["row"]  # the prompt kept in request_metadata is redacted
    await assert_reconciled(app_pool, tenant.tenant_id)


# ---------------------------------------------------------------------------------------------
# Structured output: quarantine and one repair
# ---------------------------------------------------------------------------------------------


class Verdict(BaseModel):
    channel: str
    confidence: float


@respx.mock
async def test_structured_output_is_repaired_once(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(
        side_effect=[
            httpx.Response(200, json=openai_completion("The channel is paid social.", 30, 8)),
            httpx.Response(
                200, json=openai_completion('{"channel": "paid_social", "confidence": 0.8}', 90, 12)
            ),
        ]
    )

    verdict, results = await complete_structured(
        gateway, request_for(tenant, "Which channel? Answer as JSON."), Verdict
    )

    assert verdict == Verdict(channel="paid_social", confidence=0.8)
    assert route.call_count == 2
    assert len(results) == 2
    repair = sent_body(route, 1)["messages"]
    assert repair[-2] == {"role": "assistant", "content": "The channel is paid social."}
    assert "not valid" in repair[-1]["content"]
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        [failure] = await conn.fetch("SELECT * FROM llm_validation_failures")
    assert failure["validation_error"]
    assert failure["response_payload"] == "The channel is paid social."
    assert failure["llm_api_call_id"] == results[0].call_id
    assert failure["model"] == "openai/gpt-4o-mini"
    assert [r["status"] for r in await ledger(app_pool, tenant.tenant_id)] == [
        "succeeded",
        "succeeded",
    ]
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_structured_output_invalid_twice_is_quarantined_twice(
    make_gateway: Callable[..., LlmGateway], tenant: CreatedTenant, app_pool: asyncpg.Pool
) -> None:
    gateway = make_gateway()
    route = respx.post(OPENAI_URL).mock(
        side_effect=[
            httpx.Response(200, json=openai_completion('{"channel": "paid_social"', 30, 8)),
            httpx.Response(200, json=openai_completion('{"confidence": "high"}', 90, 6)),
        ]
    )

    with pytest.raises(InvalidModelOutput):
        await complete_structured(
            gateway,
            request_for(tenant, "Is jane.doe@example.com from paid social? Answer as JSON."),
            Verdict,
        )

    assert route.call_count == 2
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        failures = await conn.fetch(
            "SELECT f.*, f::text AS row FROM llm_validation_failures f ORDER BY created_at"
        )
    assert [f["response_payload"] for f in failures] == [
        '{"channel": "paid_social"',
        '{"confidence": "high"}',
    ]
    assert "channel" in failures[1]["validation_error"]
    for failure in failures:
        assert failure["validation_error"]
        assert_no_raw_pii(failure["row"])  # the quarantined prompt is the redacted one
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_a_reservation_cut_off_after_its_commit_is_voided_not_charged(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llm_service.llm.ledger_steps as ledger_steps

    real_reserve = ledger_steps.reserve_call_alone

    async def reserve_then_lose_the_answer(conn: asyncpg.Connection, **kwargs: Any) -> Any:
        # The row is written and committed; then the connection dies before the client knows.
        async with tenant_transaction(app_pool, kwargs["tenant_id"]) as own:
            await real_reserve(own, **kwargs)
        raise asyncpg.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"
        )

    monkeypatch.setattr(ledger_steps, "reserve_call_alone", reserve_then_lose_the_answer)
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))
    ceiling = RunCeiling(Decimal("0.05"))

    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await make_gateway().complete(request_for(tenant), ceiling=ceiling)

    assert not route.called
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "failed" and row["error_type"] == "NotSent"
    assert row["cost_cents"] == 0 and not row["cost_is_estimate"]
    assert ceiling.outstanding == 0 and ceiling.spent == 0
    await assert_reconciled(app_pool, tenant.tenant_id)


@respx.mock
async def test_a_settle_that_meets_an_outage_is_retried_until_it_lands(
    make_gateway: Callable[..., LlmGateway],
    tenant: CreatedTenant,
    app_pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llm_service.llm.ledger_steps as ledger_steps

    real_settle = ledger_steps.settle_call_alone
    failures = {"left": 2}

    async def settle_after_two_outages(conn: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionRefusedError(111, "Connect call failed")
        return await real_settle(conn, *args, **kwargs)

    monkeypatch.setattr(ledger_steps, "settle_call_alone", settle_after_two_outages)
    respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(200, json=openai_completion("ok", 10, 5))
    )
    gateway = make_gateway()

    result = await gateway.complete(request_for(tenant))

    assert result.content == "ok" and failures["left"] == 0
    [row] = await ledger(app_pool, tenant.tenant_id)
    assert row["status"] == "succeeded"
    assert row["cost_cents"] == exact_cents(gateway, 10, 5)
    await assert_reconciled(app_pool, tenant.tenant_id)
