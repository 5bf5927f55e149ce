"""What prompt caching saves, and what the old pricing over-counted (figures only, no pass/fail).

Run from the repository root: `python -m bench.bench_prompt_cache`.

A 6-step investigation (five tool steps, then the answer) runs for real (runner, tools, gateway,
ledger in an embedded PostgreSQL) against stub providers that report cached tokens the way each
provider would for the prefixes it received:

* OpenAI caches automatically: the longest prefix (tool schemas, then whole messages) already
  seen in an earlier request is cached, if it is 1,024 tokens or more, in steps of 128 tokens;
* Anthropic caches only up to a `cache_control` breakpoint: the first request writes the marked
  prefix (tools and system prompt) at the cache-write rate, later ones read it.

For each provider it states the run's cost as billed with the caching design, without it (the
same run with no cache hit: for Anthropic a second run with the breakpoint switched off), and
what the pricing before issue 16 (all input at the base rate) would have recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import respx

import llm_service.llm.gateway as gateway_module
from budgets.estimate import actual_cost
from budgets.money import cents_to_usd
from llm_service.db import migrate
from llm_service.db.embedded import embedded_url, start_embedded
from llm_service.db.pool import create_pool, tenant_transaction
from llm_service.db.urls import resolve_urls
from llm_service.demo_data import generate_demo_data
from llm_service.investigations.runner import InvestigationRunner
from llm_service.jobs.kinds import Claim
from llm_service.llm.litellm_setup import load_litellm
from llm_service.llm.pricing import gateway_from_settings
from llm_service.settings import Settings
from llm_service.tenants.service import create_tenant
from llm_service.tools.specs import openai_tool_schemas

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
QUESTION = "Why did paid social revenue fall in the last 14 days?"
STEPS = 6


def _plan() -> list[tuple[str, dict[str, Any]]]:
    end = datetime.now(UTC).date() + timedelta(days=1)
    start, wide = (end - timedelta(days=14)).isoformat(), (end - timedelta(days=30)).isoformat()
    span = {"start": start, "end": end.isoformat()}
    return [
        ("channel_performance", span),
        ("compare_periods", {"current_start": start, "current_end": end.isoformat()}),
        ("top_orders", {**span, "channel": "facebook_paid", "limit": 10}),
        ("revenue_state_changes", {**span, "channel": "facebook_paid"}),
        ("dead_event_summary", {"start": wide, "end": end.isoformat()}),
    ]


class Counted:
    """The gateway's own count of each prompt (the stub reports usage within its bounds)."""

    def __init__(self) -> None:
        self.last = 0

    def wrap(self, gateway: Any) -> None:
        original = gateway.count_tokens

        def count(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
            n: int = original(messages, tools)
            if tools:
                self.last = n
            return n

        gateway.count_tokens = count


def _ids(body: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    for message in body["messages"]:
        content = message.get("content")
        if message.get("role") == "tool" and isinstance(content, str):
            ids.append(json.loads(content)["evidence_id"])
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    inner = block["content"]
                    text = inner if isinstance(inner, str) else inner[0]["text"]
                    ids.append(json.loads(text)["evidence_id"])
    return ids


def _report(ids: list[str]) -> str:
    findings = [{"claim": f"Finding {i + 1} from the evidence.", "evidence": [e]}
                for i, e in enumerate(ids[:3])]  # fmt: skip
    return json.dumps({"summary": "Paid social revenue fell.", "findings": findings})


def openai_stub(counted: Counted, model: str) -> Callable[[httpx.Request], httpx.Response]:
    """OpenAI's automatic prefix caching over the requests this stub has received."""
    litellm = load_litellm()
    seen: list[list[str]] = []
    plan, step = _plan(), {"n": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        messages = [json.dumps(m, sort_keys=True) for m in body["messages"]]
        common = max((_common(messages, old) for old in seen), default=0)
        seen.append(messages)
        cached = 0
        if common:
            tokens = litellm.token_counter(
                model=model, messages=body["messages"][:common], tools=body.get("tools")
            )
            cached = 0 if tokens < 1024 else 1024 + (tokens - 1024) // 128 * 128
        total = counted.last
        cached = min(cached, total)
        n, step["n"] = step["n"], step["n"] + 1
        if n < len(plan) and body.get("tools"):
            name, args = plan[n]
            message: dict[str, Any] = {"content": None, "tool_calls": [{
                "id": f"call_{n}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}]}  # fmt: skip
            finish = "tool_calls"
        else:
            message, finish = {"content": _report(_ids(body))}, "stop"
        return httpx.Response(200, json={
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1_764_000_000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": total, "completion_tokens": 60,
                      "total_tokens": total + 60,
                      "prompt_tokens_details": {"cached_tokens": cached}},
        })  # fmt: skip

    return respond


def anthropic_stub(counted: Counted, model: str) -> Callable[[httpx.Request], httpx.Response]:
    """Anthropic's caching: only up to a cache_control breakpoint, written once, then read."""
    litellm = load_litellm()
    written: set[str] = set()
    plan, step = _plan(), {"n": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        system = body.get("system") or []
        total = counted.last
        read = write = 0
        if system and isinstance(system, list) and system[-1].get("cache_control"):
            key = json.dumps([body.get("tools"), system], sort_keys=True)
            prefix = litellm.token_counter(
                model=model,
                messages=[{"role": "system", "content": system[-1]["text"]}],
                tools=openai_tool_schemas(),
            )
            if prefix >= 1024:
                if key in written:
                    read = prefix
                else:
                    write = prefix
                    written.add(key)
        n, step["n"] = step["n"], step["n"] + 1
        if n < len(plan) and body.get("tools"):
            name, args = plan[n]
            content = [{"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": args}]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": _report(_ids(body))}], "end_turn"
        return httpx.Response(200, json={
            "id": f"msg_{n}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": max(total - read - write, 0),
                      "cache_read_input_tokens": read, "cache_creation_input_tokens": write,
                      "output_tokens": 60},
        })  # fmt: skip

    return respond


def _common(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


async def _investigate(
    settings: Settings,
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant_id: UUID,
    url: str,
    stub: Any,
) -> list[asyncpg.Record]:
    gateway = gateway_from_settings(settings, app_pool)
    assert gateway is not None
    counted = Counted()
    counted.wrap(gateway)
    async with tenant_transaction(app_pool, tenant_id) as conn:
        run_id: UUID = await conn.fetchval(
            "INSERT INTO investigations (tenant_id, question, max_cost_cents, timeout_ms,"
            " max_steps) VALUES ($1, $2, 30, 60000, $3) RETURNING id",
            tenant_id,
            QUESTION,
            STEPS,
        )
    # The lease as the claim takes it: a fresh token, the row keeping its hash (which only the
    # claim, or the owner, may write).
    token = uuid.uuid4()
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE investigations SET status = 'running', lease_owner = 'bench',"
            " lease_expires_at = now() + interval '5 minutes',"
            " lease_token_hash = sha256(uuid_send($2::uuid)) WHERE id = $1",
            run_id,
            token,
        )
    with respx.mock:
        respx.post(url).mock(side_effect=stub(counted, str(settings.llm_model).split("/")[-1]))
        status = await InvestigationRunner(app_pool, gateway, "bench").run(
            Claim("investigation", run_id, tenant_id, False, token)
        )
    async with tenant_transaction(app_pool, tenant_id) as conn:
        rows = list(
            await conn.fetch(
                "SELECT * FROM llm_api_calls WHERE investigation_id = $1 ORDER BY created_at",
                run_id,
            )
        )
    print(f"  run {status}: {len(rows)} model calls")
    return rows


def _sum_kinds(rows: list[asyncpg.Record], field: str) -> Decimal:
    total = Decimal(0)
    for row in rows:
        for entry in (row["usage_breakdown"] or {}).values():
            total += Decimal(str(entry[field]))
    return cents_to_usd(total)


def _state(label: str, rows: list[asyncpg.Record], gateway_price: Any) -> dict[str, Decimal]:
    billed = cents_to_usd(sum((r["cost_cents"] for r in rows), Decimal(0)))
    uncached = _sum_kinds(rows, "uncached_cents")
    old = sum(
        (actual_cost(gateway_price, r["input_tokens"], r["output_tokens"]) for r in rows),
        Decimal(0),
    )
    reads = sum(int((r["usage_breakdown"] or {}).get("cache_read", {}).get("tokens", 0))
                for r in rows)  # fmt: skip
    writes = sum(int((r["usage_breakdown"] or {}).get("cache_write", {}).get("tokens", 0))
                 for r in rows)  # fmt: skip
    inputs = sum(int(r["input_tokens"] or 0) for r in rows)
    anomalies = sum(1 for r in rows if r["usage_anomaly"])
    print(
        f"  {label}: billed ${billed:.6f}; input {inputs} tokens of which cached reads {reads}, "
        f"cache writes {writes}; usage anomalies {anomalies}"
    )
    return {"billed": billed, "uncached": uncached, "old": old}


async def _main() -> None:
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench")
    load_litellm()
    server = start_embedded(Path(tempfile.mkdtemp(prefix="bench-prompt-cache-")), cleanup="delete")
    try:
        owner = embedded_url(server)
        migrate.upgrade(owner)
        base = Settings(
            llm_model="openai/gpt-4o-mini",
            llm_api_base=None,
            llm_max_attempts=1,
            llm_http_transport="httpx",  # OpenAI is mocked with respx
        )
        urls = resolve_urls(base, owner)
        base = base.model_copy(update={"database_url": urls.owner, "app_database_url": urls.app})
        owner_pool = await create_pool(urls.owner, application_name="bench-owner", max_size=2)
        app_pool = await create_pool(urls.app, application_name="bench-app", max_size=4)
        tenant = (await create_tenant(owner_pool, "bench-prompt-cache")).tenant_id
        async with tenant_transaction(owner_pool, tenant) as conn:
            await generate_demo_data(conn, tenant, events=10_000, seed=11)

        print("OpenAI gpt-4o-mini (automatic prefix caching; $0.15 base, $0.075 cached per 1M)")
        settings = base.model_copy(update={"llm_model": "openai/gpt-4o-mini"})
        price = gateway_from_settings(settings, app_pool).price()  # type: ignore[union-attr]
        rows = await _investigate(settings, app_pool, owner_pool, tenant, OPENAI_URL, openai_stub)
        on = _state("with the stable prefix", rows, price)
        _summary(on["billed"], on["uncached"], on["old"])

        print("Anthropic claude-sonnet-4-5 ($3 base, $0.30 read, $3.75 write per 1M)")
        settings = base.model_copy(update={"llm_model": "anthropic/claude-sonnet-4-5"})
        price = gateway_from_settings(settings, app_pool).price()  # type: ignore[union-attr]
        rows = await _investigate(
            settings, app_pool, owner_pool, tenant, ANTHROPIC_URL, anthropic_stub
        )
        on = _state("with cache_control", rows, price)
        original = gateway_module.mark_stable_prefix
        gateway_module.mark_stable_prefix = lambda messages, provider: (messages, False)
        try:
            rows = await _investigate(
                settings, app_pool, owner_pool, tenant, ANTHROPIC_URL, anthropic_stub
            )
        finally:
            gateway_module.mark_stable_prefix = original
        off = _state("without cache_control", rows, price)
        _summary(on["billed"], off["billed"], on["old"])
        await app_pool.close()
        await owner_pool.close()
    finally:
        server.cleanup()


def _summary(billed: Decimal, without: Decimal, old: Decimal) -> None:
    saved = without - billed
    share = f" ({saved / without * 100:.1f}%)" if without else ""
    print(
        f"  => cost with caching ${billed:.6f}, without ${without:.6f}: saved ${saved:.6f}{share}; "
        f"the old pricing would have recorded ${old:.6f} (over-count ${old - billed:.6f})"
    )


def main() -> None:
    """Print the figures."""
    asyncio.run(_main())


if __name__ == "__main__":
    main()
