"""litellm's own pricing and success/failure logging are not run for the gateway's calls.

litellm's internals are replaced at the Python level by recorders that raise (litellm catches
errors inside its cost path, so what is asserted is that nothing was recorded); the provider is
still mocked only at the HTTP layer. The same probe on a bare `litellm.acompletion` call shows
that it would see those paths if they ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from llm_service.llm.gateway import LlmGateway, LlmRequest, ProviderUnavailable
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.pricing import build_price_book
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.llm_service.llm.test_gateway import OPENAI_URL, openai_completion

_PATHS = (
    "response_cost_calculator",
    "success_handler",
    "async_success_handler",
    "failure_handler",
    "async_failure_handler",
)


@pytest.fixture
def entered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of litellm's pricing/logging functions entered while the test runs."""
    litellm = load_litellm()
    from litellm.litellm_core_utils.litellm_logging import Logging

    seen: list[str] = []

    def recorder(name: str) -> Any:
        def entered_path(*_: Any, **__: Any) -> Any:
            seen.append(name)
            raise AssertionError(f"litellm entered {name}")

        return entered_path

    monkeypatch.setattr(litellm, "response_cost_calculator", recorder("litellm.cost"))
    monkeypatch.setattr(litellm, "completion_cost", recorder("litellm.completion_cost"))
    for name in _PATHS:
        # Wrapped (not replaced) for the pricing one: our guard sits on the class attribute.
        original = getattr(Logging, name)
        if name == "response_cost_calculator":

            def pricing(self: Any, *args: Any, _o: Any = original, **kwargs: Any) -> Any:
                result = _o(self, *args, **kwargs)
                if result is not None:
                    seen.append("Logging.response_cost_calculator")
                return result

            monkeypatch.setattr(Logging, name, pricing)
        else:
            monkeypatch.setattr(Logging, name, recorder(f"Logging.{name}"))
    yield seen


@pytest.fixture
def gateway(
    test_settings: Settings, app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> LlmGateway:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )
    return LlmGateway(settings, app_pool, build_price_book(settings))


def _request(tenant: CreatedTenant) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant.tenant_id,
        endpoint="explanations",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=50,
    )


async def _settle_background() -> None:
    # litellm schedules its success logging as tasks: give every ready task its turn.
    for _ in range(20):
        await asyncio.sleep(0)


@respx.mock
async def test_bare_litellm_enters_its_pricing_and_logging(
    entered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=openai_completion()))
    await load_litellm().acompletion(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=50,
        max_retries=0,
    )
    await _settle_background()
    assert entered  # the probe sees litellm's own cost path when it runs


@respx.mock
async def test_a_gateway_call_enters_neither_pricing_nor_logging(
    gateway: LlmGateway, tenant: CreatedTenant, entered: list[str]
) -> None:
    body = openai_completion(prompt_tokens=1, completion_tokens=2)
    respx.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=body))
    result = await gateway.complete(_request(tenant))
    await _settle_background()
    assert entered == []
    assert result.cost_usd > 0  # our ledger priced it
    assert (result.input_tokens, result.output_tokens) == (1, 2)


@respx.mock
async def test_a_failed_gateway_call_runs_no_failure_logging(
    gateway: LlmGateway, tenant: CreatedTenant, entered: list[str]
) -> None:
    respx.post(OPENAI_URL).mock(
        return_value=httpx.Response(503, json={"error": {"message": "overloaded"}})
    )
    with pytest.raises(ProviderUnavailable):
        await gateway.complete(_request(tenant))
    await _settle_background()
    assert entered == []


@respx.mock
async def test_embeddings_through_the_gateway_are_not_priced_by_litellm(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    entered: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "embedding_model": "text-embedding-3-small"}
    )
    gateway = LlmGateway(settings, app_pool, build_price_book(settings))
    respx.post("https://api.openai.com/v1/embeddings").mock(
        return_value=httpx.Response(
            200,
            json={
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            },
        )
    )
    vectors, cost = await gateway.embed(tenant.tenant_id, ["hello"])
    await _settle_background()
    assert entered == []
    assert vectors == [[0.1, 0.2]] and cost > 0
