"""Prompt caching on purpose: an investigation's stable prefix, as the providers receive it."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from test_investigation_runs import queue_run, run

from llm_service.db.pool import tenant_transaction
from llm_service.demo_data import generate_demo_data
from llm_service.investigations.agent import SYSTEM_PROMPT
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from tests.helpers.scripted_provider import (
    OPENAI_URL,
    final_answer,
    reply,
    scripted,
    tool_call_message,
)

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"


@pytest.fixture(scope="module")
async def cached_tenant(owner_pool: asyncpg.Pool) -> CreatedTenant:
    created = await create_tenant(owner_pool, "cached-prefix")
    async with tenant_transaction(owner_pool, created.tenant_id) as conn:
        await generate_demo_data(conn, created.tenant_id, events=10_000, seed=5)
    return created


def _period() -> tuple[str, str]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - 14 * 86400)), today


def _messages_bytes(raw: bytes) -> bytes:
    """The request body from its messages array on (the bytes the prompt is made of)."""
    start = raw.index(b'"messages":')
    return raw[start:]


@respx.mock
async def test_openai_prefix_is_byte_identical_from_step_to_step(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    cached_tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )
    start, end = _period()
    compare = {"current_start": start, "current_end": end}
    route = respx.post(OPENAI_URL).mock(
        side_effect=scripted(
            reply(tool_call_message(("channel_performance", {"start": start, "end": end}))),
            reply(tool_call_message(("compare_periods", compare))),
            reply(tool_call_message(("top_orders", {"start": start, "end": end}))),
            reply(final_answer),
        )
    )
    run_id = await queue_run(app_pool, cached_tenant.tenant_id)
    assert await run(settings, app_pool, cached_tenant.tenant_id, run_id) == "succeeded"

    raws = [call.request.content for call in route.calls]
    bodies = [json.loads(raw) for raw in raws]
    assert len(bodies) >= 4
    for before, after, raw_before, raw_after in zip(
        bodies, bodies[1:], raws, raws[1:], strict=False
    ):
        # Tool schemas first and unchanged; every message but the per-step limits note is
        # re-sent exactly, in order, so the provider sees the same prefix plus new messages.
        assert json.dumps(after["tools"]) == json.dumps(before["tools"])
        stable = before["messages"][:-1]
        assert before["messages"][-1]["content"].startswith("[limits]")
        assert after["messages"][: len(stable)] == stable
        note = raw_before.rindex(b"[limits]")
        cut = raw_before.rindex(b"{", 0, note)
        prefix = _messages_bytes(raw_before[:cut])
        assert _messages_bytes(raw_after).startswith(prefix)
        assert len(prefix) > len(SYSTEM_PROMPT)


def _anthropic(content: list[dict[str, Any]], stop: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": f"msg_{time.monotonic_ns()}",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 900, "output_tokens": 60},
        },
    )


@respx.mock
async def test_anthropic_investigation_marks_its_stable_prefix_for_caching(
    test_settings: Settings,
    app_pool: asyncpg.Pool,
    cached_tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    settings = test_settings.model_copy(
        update={"llm_model": "anthropic/claude-sonnet-4-5", "llm_max_attempts": 1}
    )
    start, end = _period()
    use = {"type": "tool_use", "id": "toolu_01", "name": "channel_performance",
           "input": {"start": start, "end": end}}  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        ids = [
            json.loads(block["content"] if isinstance(block["content"], str)
                       else block["content"][0]["text"])["evidence_id"]
            for message in body["messages"] if isinstance(message["content"], list)
            for block in message["content"] if block.get("type") == "tool_result"
        ]  # fmt: skip
        report = {"summary": "Paid social fell.", "findings": [{"claim": "x", "evidence": ids}]}
        return _anthropic([{"type": "text", "text": json.dumps(report)}], "end_turn")

    route = respx.post(ANTHROPIC_URL).mock(
        side_effect=scripted(lambda _: _anthropic([use], "tool_use"), answer)
    )
    run_id = await queue_run(app_pool, cached_tenant.tenant_id)
    assert await run(settings, app_pool, cached_tenant.tenant_id, run_id) == "succeeded"

    bodies = [json.loads(call.request.content) for call in route.calls]
    assert len(bodies) >= 2
    for body in bodies:
        # Anthropic's prefix is tools, then system: a breakpoint at the end of the system
        # prompt caches both; the system text is the same at every step.
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert body["system"] == bodies[0]["system"]
        assert body["tools"] == bodies[0]["tools"]
        assert "cache_control" not in json.dumps(body["messages"])
