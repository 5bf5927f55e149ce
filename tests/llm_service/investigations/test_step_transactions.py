"""A step's records share one transaction: its model call's event, its tool calls and their
events, and the next step's start; none is lost or out of order (scripted OpenAI over respx)."""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import Decimal
from types import ModuleType
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import respx
from test_investigation_runs import (
    data_tenant,  # noqa: F401  (the module's data fixture, shared)
    queue_run,
    run,
)

import llm_service.investigations.events as events_module
import llm_service.investigations.evidence as evidence_module
import llm_service.investigations.runner as runner_module
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
    # The answer's model call is recorded with the run's end, in its transaction.
    final_xid = next(e["xid"] for e in events if e["event_type"] == "final")
    assert by_xid[final_xid] == ["llm_call:3", "final:None"]
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
    # The wrap-up's model call is written with the run's end.
    assert events[-2]["xid"] == events[-1]["xid"]


@respx.mock
async def test_a_run_starts_in_one_transaction(
    model_settings: Settings,
    app_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the run, the cap check and the "started" event share one transaction; with the
    first step's event, two transactions of the run's own come before its first model call."""
    opened: list[str] = []
    at_first_call: list[int] = []

    def counting(module: ModuleType) -> None:
        real = module.tenant_transaction

        def counted(*args: Any, **kwargs: Any) -> Any:
            opened.append(module.__name__)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "tenant_transaction", counted)

    for module in (runner_module, events_module, evidence_module):
        counting(module)
    script = scripted(*_steps(), reply(final_answer))

    def provider(request: Any) -> Any:
        at_first_call.append(len(opened))
        return script(request)

    respx.post(OPENAI_URL).mock(side_effect=provider)
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    assert await run(model_settings, app_pool, data_tenant.tenant_id, run_id) == "succeeded"
    assert at_first_call and at_first_call[0] == 2, opened
    events, _, _ = await _records(app_pool, data_tenant.tenant_id, run_id)
    kinds = [e["event_type"] for e in events]
    assert kinds[:2] == ["started", "step"]
    limits = events[0]["data"]["limits"]
    assert Decimal(limits["max_cost_usd"]) == Decimal("0.30")
    assert (limits["timeout_s"], limits["max_steps"]) == (60.0, 8)
    assert events[0]["data"]["worker"] == "test-worker"


@respx.mock
async def test_a_run_taken_over_before_its_end_records_nothing_more(
    model_settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    data_tenant: CreatedTenant,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another worker takes the run over after the model answered: the answer's deferred event
    is refused with the end this worker no longer owns; the run is left to its new holder."""
    respx.post(OPENAI_URL).mock(side_effect=scripted(*_steps(), reply(final_answer)))
    run_id = await queue_run(app_pool, data_tenant.tenant_id)
    real = runner_module.InvestigationRunner._record_finish
    pending_at_end: list[int] = []

    async def taken_over(
        self: runner_module.InvestigationRunner, claim: Any, events: Any, *args: Any
    ) -> bool:
        pending_at_end.append(events.pending)
        async with tenant_transaction(owner_pool, claim.tenant_id) as conn:
            await conn.execute(
                "UPDATE investigations SET lease_owner = 'other-worker', "
                "lease_token_hash = sha256(uuid_send(gen_random_uuid())) WHERE id = $1",
                claim.run_id,
            )
        result: bool = await real(self, claim, events, *args)
        return result

    monkeypatch.setattr(runner_module.InvestigationRunner, "_record_finish", taken_over)
    # The run's own view: it answered (its end simply was not this worker's to record).
    assert await run(model_settings, app_pool, data_tenant.tenant_id, run_id) == "succeeded"
    assert pending_at_end == [1]  # the answer's llm_call event, deferred to the end
    events, _, calls = await _records(app_pool, data_tenant.tenant_id, run_id)
    kinds = [(e["event_type"], e["data"].get("step")) for e in events]
    assert ("llm_call", 3) not in kinds and ("final", None) not in kinds
    assert calls == 3
    async with tenant_transaction(owner_pool, data_tenant.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT status, lease_owner FROM investigations WHERE id = $1", run_id
        )
    assert (row["status"], row["lease_owner"]) == ("running", "other-worker")
