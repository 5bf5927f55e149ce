"""A model whose tool calls are malformed: each is a tool error for it, and the run goes on.

The provider is mocked at the HTTP layer in OpenAI's wire format (respx); the tools, the ledger
and the run rows are real. One step carries every malformed call we could think of at once
(null, empty, non-string, huge and unknown names; no function; null, non-string and duplicate
ids; bad, non-object, nested, over-size and non-standard JSON; absurd dates and integers); the
model then answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx
from claimed_runs import claim_of, queue_claimed_run

from llm_service.db.pool import tenant_transaction
from llm_service.investigations.runner import InvestigationRunner
from llm_service.investigations.tool_calls import MAX_TOOL_CALLS_PER_STEP
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.scripted_provider import OPENAI_URL, completion_body, scripted

P = {"start": "2025-03-01", "end": "2025-03-08"}
NAME_ON_THE_WIRE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

MALFORMED: list[dict[str, Any]] = [
    {"id": "call_null_name", "function": {"name": None, "arguments": json.dumps(P)}},
    {"id": "call_empty_name", "function": {"name": "", "arguments": json.dumps(P)}},
    {"id": "call_number_name", "function": {"name": 12345, "arguments": json.dumps(P)}},
    {"id": "call_object_name", "function": {"name": {"a": 1}, "arguments": json.dumps(P)}},
    {"id": "call_no_function", "function": None},
    {"id": "call_number_args", "function": {"name": "top_orders", "arguments": 5}},
    {"id": 77, "function": {"name": "top_orders", "arguments": "{}"}},
    {"id": "call_unknown", "function": {"name": "drop_tables", "arguments": "{}"}},
    {"id": "call_spaces", "function": {"name": "top orders; --", "arguments": "{}"}},
    {"id": "call_huge_name", "function": {"name": "t" * 5000, "arguments": "{}"}},
    {"id": "call_deep", "function": {"name": "top_orders", "arguments": "[" * 100_000}},
    {
        "id": "call_deep_closed",
        "function": {"name": "top_orders", "arguments": "[" * 3000 + "]" * 3000},
    },
    {"id": "call_big", "function": {"name": "top_orders", "arguments": '"' + "x" * 50_000 + '"'}},
    {"id": "call_bad_json", "function": {"name": "top_orders", "arguments": "{start: 2025"}},
    {"id": "call_array", "function": {"name": "top_orders", "arguments": "[1, 2]"}},
    {"id": "call_null_args", "function": {"name": "top_orders", "arguments": "null"}},
    {
        "id": "call_nan",
        "function": {"name": "top_orders", "arguments": json.dumps(P)[:-1] + ', "limit": NaN}'},
    },
    {
        "id": "call_huge_int",
        "function": {
            "name": "top_orders",
            "arguments": json.dumps(P)[:-1] + ', "limit": ' + "9" * 4500 + "}",
        },
    },
    {
        "id": "call_year_1",
        "function": {
            "name": "compare_periods",
            "arguments": json.dumps({"current_start": "0001-01-01", "current_end": "0001-01-08"}),
        },
    },
    {
        "id": "call_year_9999",
        "function": {
            "name": "top_orders",
            "arguments": json.dumps({"start": "9999-12-24", "end": "9999-12-31"}),
        },
    },
    {"id": None, "function": {"name": "top_orders", "arguments": "{}"}},
    {"id": "call_dup", "function": {"name": "top_orders", "arguments": "{}"}},
    {"id": "call_dup", "function": {"name": "top_orders", "arguments": "{}"}},
]


def _malformed_step(chunk: int) -> Callable[[httpx.Request], httpx.Response]:
    """The chunk-th step's share of the malformed calls (each step within the per-step cap)."""
    part = MALFORMED[chunk * MAX_TOOL_CALLS_PER_STEP : (chunk + 1) * MAX_TOOL_CALLS_PER_STEP]

    def respond(_: httpx.Request) -> httpx.Response:
        calls = [{"type": "function", **call} for call in part]
        return httpx.Response(200, json=completion_body({"content": None, "tool_calls": calls}))

    return respond


CHUNKS = -(-len(MALFORMED) // MAX_TOOL_CALLS_PER_STEP)


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    ids = [json.loads(m["content"])["evidence_id"] for m in body["messages"] if m["role"] == "tool"]
    report = {
        "summary": "Every call was refused.",
        "findings": [{"claim": "x", "evidence": ids[:1]}],
    }
    return httpx.Response(200, json=completion_body({"content": json.dumps(report)}))


async def _queue_running(pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    return await queue_claimed_run(pool, tenant_id, "Why did revenue fall?")


@respx.mock
async def test_every_malformed_tool_call_is_a_tool_error_and_the_run_goes_on(
    model_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    respond = scripted(*(_malformed_step(k) for k in range(CHUNKS)), _answer)
    seen = respond.seen
    respx.post(OPENAI_URL).mock(side_effect=respond)
    run_id = await _queue_running(app_pool, tenant.tenant_id)
    runner = InvestigationRunner(
        app_pool, gateway_from_settings(model_settings, app_pool), "test-worker"
    )
    status = await runner.run(claim_of(run_id))

    assert status == "succeeded"
    assert len(seen) == CHUNKS + 1  # the malformed steps, then the answer: no retry, none lost
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        calls = await conn.fetch(
            "SELECT tool_name, input_params, error FROM investigation_tool_calls "
            "WHERE investigation_id = $1",
            run_id,
        )
        run = await conn.fetchrow("SELECT status, result FROM investigations WHERE id = $1", run_id)
    assert run["status"] == "succeeded"
    assert len(calls) == len(MALFORMED)
    assert all(c["error"] for c in calls), [c["tool_name"] for c in calls if not c["error"]]
    assert not any("unexpectedly" in c["error"] for c in calls)
    assert all(len(c["tool_name"]) <= 100 for c in calls)
    assert all(len(json.dumps(c["input_params"])) < 5000 for c in calls)

    # What the model was shown: its calls echoed in a form any provider accepts, each answered.
    last = json.loads(seen[-1].content)["messages"]
    echoed = [tc for m in last if m["role"] == "assistant" for tc in m.get("tool_calls") or []]
    answers = [m for m in last if m["role"] == "tool"]
    ids = [tc["id"] for tc in echoed]
    assert len(ids) == len(MALFORMED) == len(set(ids))
    assert all(isinstance(i, str) and i for i in ids)
    assert [a["tool_call_id"] for a in answers] == ids
    for tc in echoed:
        assert NAME_ON_THE_WIRE.match(tc["function"]["name"]), tc["function"]["name"][:80]
        assert isinstance(json.loads(tc["function"]["arguments"]), dict)
        assert len(tc["function"]["arguments"]) < 5000
    assert all("error" in json.loads(a["content"]) for a in answers)


@pytest.mark.parametrize(
    "question",
    [
        "What happened to revenue from 0001-01-01 to 0001-01-08?",
        "Compare revenue between 9999-12-24 and 9999-12-31",
        "Why did revenue change from 1970-01-01 to 1970-01-08?",  # no period before it
    ],
)
async def test_a_degraded_run_asked_about_the_calendars_edge_answers_with_tool_errors(
    test_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant, question: str
) -> None:
    assert test_settings.llm_model is None
    # The question is fixed at creation (the application role cannot rewrite it).
    run_id = await queue_claimed_run(app_pool, tenant.tenant_id, question)
    runner = InvestigationRunner(
        app_pool, gateway_from_settings(test_settings, app_pool), "test-worker"
    )
    status = await runner.run(claim_of(run_id))
    assert status == "succeeded"
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        calls = await conn.fetch(
            "SELECT tool_name, error FROM investigation_tool_calls WHERE investigation_id = $1",
            run_id,
        )
    # The analyst plans its tools from the question (issue 12); a comparison is always among them.
    assert "compare_periods" in {c["tool_name"] for c in calls}
    errors = [c["error"] for c in calls if c["error"]]
    assert errors and not any("unexpectedly" in e for e in errors)
    assert any("1970-01-01" in e for e in errors)


@respx.mock
async def test_a_flood_of_tool_calls_runs_a_bounded_few_and_tells_the_model(
    model_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    flood = [
        {"id": f"call_{i}", "type": "function",
         "function": {"name": "top_orders", "arguments": json.dumps(P)}}
        for i in range(500)
    ]  # fmt: skip

    def flood_step(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion_body({"content": None, "tool_calls": flood}))

    respond = scripted(flood_step, _answer)
    seen = respond.seen
    respx.post(OPENAI_URL).mock(side_effect=respond)
    run_id = await _queue_running(app_pool, tenant.tenant_id)
    runner = InvestigationRunner(
        app_pool, gateway_from_settings(model_settings, app_pool), "test-worker"
    )
    assert await runner.run(claim_of(run_id)) == "succeeded"
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM investigation_tool_calls WHERE investigation_id = $1", run_id
        )
    assert recorded == MAX_TOOL_CALLS_PER_STEP
    second = json.loads(seen[1].content)
    echoed = next(m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    assert len(echoed["tool_calls"]) == MAX_TOOL_CALLS_PER_STEP
    assert len([m for m in second["messages"] if m["role"] == "tool"]) == MAX_TOOL_CALLS_PER_STEP
    assert any(
        m["role"] == "user" and f"{500 - MAX_TOOL_CALLS_PER_STEP} more" in m["content"]
        for m in second["messages"]
    )
