"""A step's records share one transaction: its model call's event, its tool calls and their
events, and the next step's start; none is lost or out of order (scripted OpenAI over respx)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any
from uuid import UUID

import asyncpg
import respx
from test_investigation_runs import (
    data_tenant,  # noqa: F401  (the module's data fixture, shared)
    queue_run,
    run,
)

from llm_service.db.pool import tenant_transaction
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from tests.helpers.scripted_provider import (
    OPENAI_URL,
    final_answer,
    reply,
    scripted,
    tool_call_message,
)


def _steps() -> tuple[Any, Any]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 14 * 86400))
    first = reply(
        tool_call_message(
            ("channel_performance", {"start": start, "end": today}),
            ("compare_periods", {"current_start": start, "current_end": today}),
        )
    )
    second = reply(tool_call_message(("no_such_tool", {})))
    return first, second


async def _records(
    pool: asyncpg.Pool, tenant_id: UUID, run_id: UUID
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The run's events and tool calls with the transaction that wrote each (xmin)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        events = [
            dict(r)
            for r in await conn.fetch(
                "SELECT seq, event_type, data, xmin::text AS xid FROM investigation_events "
                "WHERE investigation_id = $1 ORDER BY seq",
                run_id,
            )
        ]
        tools = [
            dict(r)
            for r in await conn.fetch(
                "SELECT id, step, xmin::text AS xid FROM investigation_tool_calls "
                "WHERE investigation_id = $1",
                run_id,
            )
        ]
        calls = await conn.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE investigation_id = $1", run_id
        )
    return events, tools, calls


@respx.mock
async def test_a_steps_records_are_one_transaction_in_order(
    model_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,  # noqa: F811
) -> None:
    first, second = _steps()
    respx.post(OPENAI_URL).mock(side_effect=scripted(first, second, reply(final_answer)))
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    assert await run(model_settings, app_pool, data_tenant.tenant_id, run_id) == "succeeded"
    events, tools, calls = await _records(app_pool, data_tenant.tenant_id, run_id)
    kinds = [(e["event_type"], e["data"].get("step")) for e in events]
    assert kinds == [
        ("started", None),
        ("step", 1),
        ("llm_call", 1),
        ("tool_call", 1),
        ("tool_call", 1),
        ("step", 2),
        ("llm_call", 2),
        ("tool_call", 2),
        ("step", 3),
        ("llm_call", 3),
        ("final", None),
    ]
    assert calls == 3 == sum(1 for kind, _ in kinds if kind == "llm_call")
    # Each tool step: its llm_call event, its tool calls and their events, the next step's
    # start, all written by ONE transaction.
    by_xid: dict[str, list[str]] = defaultdict(list)
    for e in events:
        by_xid[e["xid"]].append(f"{e['event_type']}:{e['data'].get('step')}")
    for t in tools:
        by_xid[t["xid"]].append(f"row:{t['step']}")
    groups = sorted(by_xid.values(), key=len, reverse=True)
    assert sorted(groups[0]) == sorted(
        ["llm_call:1", "tool_call:1", "tool_call:1", "step:2", "row:1", "row:1"]
    )
    assert sorted(groups[1]) == sorted(["llm_call:2", "tool_call:2", "step:3", "row:2"])
    # The evidence ids the events name are the rows' ids.
    assert {e["data"]["evidence_id"] for e in events if e["event_type"] == "tool_call"} == {
        str(t["id"]) for t in tools
    }


@respx.mock
async def test_at_the_step_limit_the_last_steps_events_are_kept(
    model_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,  # noqa: F811
) -> None:
    first, second = _steps()
    # Tools at every step until the limit (2), then the wrap-up answer.
    respx.post(OPENAI_URL).mock(side_effect=scripted(first, second, reply(final_answer)))
    run_id = await queue_run(app_pool, data_tenant.tenant_id, max_steps=2)
    assert await run(model_settings, app_pool, data_tenant.tenant_id, run_id) == "succeeded"
    events, tools, calls = await _records(app_pool, data_tenant.tenant_id, run_id)
    kinds = [(e["event_type"], e["data"].get("step")) for e in events]
    assert kinds == [
        ("started", None),
        ("step", 1),
        ("llm_call", 1),
        ("tool_call", 1),
        ("tool_call", 1),
        ("step", 2),
        ("llm_call", 2),
        ("tool_call", 2),
        ("llm_call", 0),  # the wrap-up
        ("final", None),
    ]
    assert calls == 3 and len(tools) == 3
