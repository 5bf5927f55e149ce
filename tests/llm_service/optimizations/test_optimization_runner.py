"""Budget optimisation jobs end to end: a handcrafted dataset, degraded and model-written runs.

Other tests share the queue, so each test claims ITS job directly (as the owner: running, with
this test's worker as the lease owner) and hands the runner a claim for it, instead of taking
whatever fn_claim_next_run returns next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx

from llm_service.costs.ledger_repository import reserve_call, settle_call
from llm_service.db.pool import presenting_run_token, tenant_transaction
from llm_service.llm.gateway import LlmGateway
from llm_service.llm.pricing import build_price_book
from llm_service.optimizations.runner import run_budget_optimization
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant, create_tenant
from llm_service.workers.worker import Claim as WorkerClaim
from llm_service.workers.worker import Worker
from tests.helpers.app_role import lease_run
from tests.helpers.stall import Stalled
from tests.helpers.waiting import wait_until

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
URL = "/v1/budget-optimizations"
PERIOD = {"start": "2025-03-01", "end": "2025-04-01"}
WORKER = "test-optimizations-worker"


@dataclass(frozen=True)
class Claim:
    """A claim as the worker hands it to the runner."""

    kind: str
    run_id: UUID
    tenant_id: UUID
    takeover: bool
    lease_token: UUID


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (key, occurred_at, revenue cents, {model_type: [(channel, cents)]}, ledger rows [(state, cents)])
# Ledger rows hang off the event's last_touch allocation.
EVENTS: list[tuple[str, str, int, dict[str, list[tuple[str, int]]], list[tuple[str, int]]]] = [
    # facebook_paid: 14,000 attributed; ledger 10,000 captured + 4,000 refunded -> net ratio 5/7.
    ("fb1", "2025-03-05T10:00:00", 10_000,
     {"last_touch": [("facebook_paid", 10_000)],
      "linear": [("facebook_paid", 5_000), ("email", 5_000)]},
     [("captured", 10_000)]),
    ("fb2", "2025-03-15T12:00:00", 4_000, {"last_touch": [("facebook_paid", 4_000)]},
     [("refunded", 4_000)]),
    # google_search_paid: 30,000 attributed; 20,000 captured, 10,000 charged back -> ratio 2/3.
    ("gs1", "2025-03-10T08:00:00", 20_000, {"last_touch": [("google_search_paid", 20_000)]},
     [("captured", 20_000)]),
    ("gs2", "2025-03-31T23:59:59", 10_000, {"last_touch": [("google_search_paid", 10_000)]},
     [("chargeback", 10_000)]),
    # email: 6,000 attributed at the very start of the period; only an authorized ledger row.
    ("em1", "2025-03-01T00:00:00", 6_000, {"last_touch": [("email", 6_000)]},
     [("authorized", 6_000)]),
    # Outside the period (the end is excluded): never counted.
    ("out", "2025-04-01T00:00:00", 99_000, {"last_touch": [("google_search_paid", 99_000)]},
     [("captured", 99_000)]),
    ("old", "2025-02-28T23:59:59", 50_000, {"last_touch": [("email", 50_000)]}, []),
    # Another model only: invisible to last_touch.
    ("ft1", "2025-03-20T00:00:00", 7_000, {"first_touch": [("tiktok_paid", 7_000)]}, []),
]  # fmt: skip


async def seed(owner_pool: asyncpg.Pool, tenant_id: UUID) -> None:
    """Write the dataset as the owner, under the tenant (events, then ONE allocation insert)."""
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        event_ids: dict[str, UUID] = {}
        for key, at, revenue, _, _ in EVENTS:
            event_ids[key] = await conn.fetchval(
                """INSERT INTO attribution_events (tenant_id, occurred_at, event_timestamp,
                       event_type, channel, revenue_cents, idempotency_key)
                   VALUES ($1, $2, $2, 'purchase', 'direct', $3, $4) RETURNING id""",
                tenant_id, _at(at), revenue, f"evt-{key}",
            )  # fmt: skip
        rows = [
            (event_ids[key], channel, cents, Decimal(cents) / revenue, model)
            for key, _, revenue, split, _ in EVENTS
            for model, parts in split.items()
            for channel, cents in parts
        ]
        inserted = await conn.fetch(
            """INSERT INTO attribution_allocations (tenant_id, event_id, channel_code,
                   allocated_revenue_cents, allocation_ratio, model_type)
               SELECT $1, e, c, r, q, m
               FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::numeric[], $6::text[])
                    AS v(e, c, r, q, m)
               RETURNING id, event_id, model_type""",
            tenant_id, *[list(col) for col in zip(*rows, strict=True)],
        )  # fmt: skip
        last_touch = {r["event_id"]: r["id"] for r in inserted if r["model_type"] == "last_touch"}
        for key, _, _, _, ledger in EVENTS:
            for n, (state, cents) in enumerate(ledger):
                first = "authorized" if state == "authorized" else "captured"
                ledger_id = await conn.fetchval(
                    """INSERT INTO revenue_ledger (tenant_id, transaction_id, allocation_id, state,
                           amount_cents, revenue_cents)
                       VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
                    tenant_id, f"txn-{key}-{n}", last_touch[event_ids[key]], first,
                    cents + cents // 10, cents,
                )  # fmt: skip
                if state != first:  # refunds and chargebacks happen to captured rows
                    await conn.execute(
                        "UPDATE revenue_ledger SET state = $2 WHERE id = $1", ledger_id, state
                    )
        # The allocation-sum trigger's plan was made for a near-empty table: drop it, so this
        # pooled connection does not keep it for a later bulk load (see test_demo_data).
        await conn.execute("DISCARD PLANS")


def _auth(tenant: CreatedTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


async def queue_job(client: httpx.AsyncClient, tenant: CreatedTenant, **body: Any) -> UUID:
    """POST a job through the API; returns its id."""
    # These tests exercise the method on every channel, the unpaid email among them; the
    # default (paid channels only) has its own test below.
    payload = {"total_budget_usd": "3600.00", "period": PERIOD, "include_unpaid": True, **body}
    response = await client.post(URL, json=payload, headers=_auth(tenant))
    assert response.status_code == 202, response.text
    return UUID(response.json()["id"])


async def claim_job(owner_pool: asyncpg.Pool, tenant_id: UUID, job_id: UUID) -> Claim:
    """Claim THIS job for the test's worker, as fn_claim_next_run would (a fresh lease token,
    of which the row keeps the hash)."""
    token = uuid.uuid4()
    async with tenant_transaction(owner_pool, tenant_id) as conn:
        done = await conn.execute(
            """UPDATE budget_optimization_jobs
                  SET status = 'running', lease_owner = $2, attempts = attempts + 1,
                      lease_expires_at = now() + interval '30 seconds', heartbeat_at = now(),
                      started_at = coalesce(started_at, now()),
                      lease_token_hash = sha256(uuid_send($3::uuid))
                WHERE id = $1""",
            job_id, WORKER, token,
        )  # fmt: skip
    assert done == "UPDATE 1"
    return Claim("budget_optimization", job_id, tenant_id, False, token)


async def fetch(client: httpx.AsyncClient, tenant: CreatedTenant, job_id: UUID) -> dict[str, Any]:
    """The job as the API returns it."""
    response = await client.get(f"{URL}/{job_id}", headers=_auth(tenant))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def job_calls_cost(app_pool: asyncpg.Pool, tenant_id: UUID, job_id: UUID) -> Decimal:
    """The exact sum of the job's llm_api_calls."""
    async with tenant_transaction(app_pool, tenant_id) as conn:
        total: Decimal = await conn.fetchval(
            "SELECT coalesce(sum(cost_cents), 0) FROM llm_api_calls "
            "WHERE budget_optimization_job_id = $1",
            job_id,
        )
    return total


def _by_channel(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["channel"]: c for c in job["recommendations"]["channels"]}


async def test_by_default_only_paid_channels_get_budget_and_the_rest_are_named(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    await seed(owner_pool, tenant.tenant_id)
    paid_only = await queue_job(client, tenant, include_unpaid=False)
    claim = await claim_job(owner_pool, tenant.tenant_id, paid_only)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    job = await fetch(client, tenant, paid_only)
    recs = job["recommendations"]
    async with owner_pool.acquire() as conn:
        unpaid = {r["code"] for r in await conn.fetch(
            "SELECT code FROM channel_taxonomy WHERE NOT is_paid")}  # fmt: skip
    assert unpaid and not unpaid & set(_by_channel(job))
    assert [e["channel"] for e in recs["excluded_channels"]] == ["email"]
    assert "not a paid channel" in recs["excluded_channels"][0]["reason"]
    assert recs["excluded_channels"][0]["attributed_revenue_usd"] == "60.00"
    assert recs["allocated_usd"] == "3600.00"
    # 200 : 100 between the two paid channels, and the rationale says what was left out.
    assert {c: v["proposed_usd"] for c, v in _by_channel(job).items()} == {
        "google_search_paid": "2400.00", "facebook_paid": "1200.00"}  # fmt: skip
    assert any("Left out 1 unpaid channel(s) (email 60.00 USD" in n for n in recs["notes"])
    assert "Left out 1 unpaid channel" in job["rationale"]
    # Naming an unpaid channel in the bounds asks for it.
    asked = await queue_job(
        client, tenant, include_unpaid=False, bounds={"email": {"max_usd": "100"}}
    )
    claim = await claim_job(owner_pool, tenant.tenant_id, asked)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    job = await fetch(client, tenant, asked)
    assert _by_channel(job)["email"]["proposed_usd"] == "100.00"
    assert job["recommendations"]["excluded_channels"] == []


async def test_degraded_run_with_no_model_writes_a_templated_rationale(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    await seed(owner_pool, tenant.tenant_id)
    job_id = await queue_job(client, tenant)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"

    job = await fetch(client, tenant, job_id)
    assert job["status"] == "succeeded"
    assert job["degraded"] is True
    assert "no LLM model is configured" in job["reason"]
    assert job["cost_usd"] == "0"
    assert job["llm_calls"] == []
    assert job["finished_at"] is not None
    recs = job["recommendations"]
    assert recs["total_budget_usd"] == recs["allocated_usd"] == "3600.00"
    assert recs["unallocated_usd"] == "0.00"
    assert recs["feasible"] is True
    assert recs["attributed_revenue_usd"] == "500.00"
    # Ordered by efficiency: google 200.00, facebook 100.00, email 60.00.
    assert [c["channel"] for c in recs["channels"]] == [
        "google_search_paid", "facebook_paid", "email"]  # fmt: skip
    channels = _by_channel(job)
    google, facebook, email = (
        channels[c] for c in ("google_search_paid", "facebook_paid", "email")
    )
    assert google["attributed_revenue_usd"] == "300.00"
    assert google["ledger_gross_usd"] == "300.00"
    assert google["ledger_chargeback_usd"] == "100.00"
    assert google["ledger_net_usd"] == "200.00"
    assert google["net_ratio"] == "0.666667"
    assert google["efficiency_usd"] == "200.0000"
    assert facebook["attributed_revenue_usd"] == "140.00"
    assert facebook["ledger_refunded_usd"] == "40.00"
    assert facebook["net_ratio"] == "0.714286"
    assert facebook["efficiency_usd"] == "100.0000"
    assert email["ledger_rows"] == 1
    assert email["ledger_gross_usd"] == "0.00"
    assert email["ledger_authorized_usd"] == "60.00"
    assert email["net_ratio"] == "1.000000"
    assert email["current_share"] == "0.120000"
    # In proportion to efficiency 200 : 100 : 60 of 3,600.00.
    assert (google["proposed_usd"], facebook["proposed_usd"], email["proposed_usd"]) == (
        "2000.00", "1000.00", "600.00")  # fmt: skip
    assert all(c["bound_binding"] is None for c in recs["channels"])
    # The template writes from the figures.
    assert "Google Search Ads (google_search_paid): $2,000.00 (55.6% of the budget)" in (
        job["rationale"])  # fmt: skip
    assert job["risks"] and "no spend data" in job["risks"][0].lower()
    assert any("google_search_paid (33.3%)" in r for r in job["risks"])


async def test_bounds_water_fill_and_are_reported(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    await seed(owner_pool, tenant.tenant_id)
    job_id = await queue_job(client, tenant, bounds={
        "google_search_paid": {"max_usd": "1500"}, "sms": {"min_usd": "100"}})  # fmt: skip
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    job = await fetch(client, tenant, job_id)
    proposed = {code: c["proposed_usd"] for code, c in _by_channel(job).items()}
    # google capped at 1,500; sms (no revenue) held at its 100 minimum; 2,000 split 100 : 60.
    assert proposed == {"google_search_paid": "1500.00", "sms": "100.00",
                        "facebook_paid": "1250.00", "email": "750.00"}  # fmt: skip
    binding = {code: c["bound_binding"] for code, c in _by_channel(job).items()}
    assert binding == {"google_search_paid": "max", "sms": "min", "facebook_paid": None,
                       "email": None}  # fmt: skip
    assert "capped at its maximum of $1,500.00" in job["rationale"]


async def test_infeasible_bounds_leave_the_remainder_unallocated(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    await seed(owner_pool, tenant.tenant_id)
    bounds = {c: {"max_usd": "1000"} for c in ("google_search_paid", "facebook_paid", "email")}
    job_id = await queue_job(client, tenant, bounds=bounds)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    recs = (await fetch(client, tenant, job_id))["recommendations"]
    assert recs["allocated_usd"] == "3000.00"
    assert recs["unallocated_usd"] == "600.00"
    assert recs["feasible"] is False
    assert any("600.00 USD is left unallocated" in n for n in recs["notes"])


async def test_another_model_type_and_an_empty_tenant(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    job_id = await queue_job(client, tenant)  # no data at all yet
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    recs = (await fetch(client, tenant, job_id))["recommendations"]
    assert recs["channels"] == []
    assert recs["unallocated_usd"] == "3600.00"

    await seed(owner_pool, tenant.tenant_id)
    job_id = await queue_job(client, tenant, model_type="linear")
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    channels = _by_channel(await fetch(client, tenant, job_id))
    # Linear splits fb1 50/50; ledger rows still count by their own (last_touch) allocation's
    # channel, so facebook keeps its 5/7 and google (no linear allocations) gets nothing.
    assert channels["facebook_paid"]["attributed_revenue_usd"] == "50.00"
    assert channels["facebook_paid"]["net_ratio"] == "0.714286"
    assert channels["email"]["attributed_revenue_usd"] == "50.00"
    assert channels["google_search_paid"]["attributed_revenue_usd"] == "0.00"
    assert channels["google_search_paid"]["proposed_usd"] == "0.00"
    # 50 x 5/7 : 50 -> 5 : 7 of 3,600.00 = 1,500.00 : 2,100.00.
    assert channels["facebook_paid"]["proposed_usd"] == "1500.00"
    assert channels["email"]["proposed_usd"] == "2100.00"


async def test_a_job_held_by_another_worker_is_left_alone(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    job_id = await queue_job(client, tenant)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, "someone-else", claim) == "lost"
    # The holder's name without the claim's token is not the holder either.
    forged = dataclasses.replace(claim, lease_token=uuid.uuid4())
    assert await run_budget_optimization(app_pool, None, WORKER, forged) == "lost"
    assert (await fetch(client, tenant, job_id))["status"] == "running"
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "succeeded"
    missing = Claim("budget_optimization", uuid.uuid4(), tenant.tenant_id, False, uuid.uuid4())
    assert await run_budget_optimization(app_pool, None, WORKER, missing) == "missing"


async def test_a_job_interrupted_too_often_fails(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    job_id = await queue_job(client, tenant)
    async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
        await conn.execute("UPDATE budget_optimization_jobs SET attempts = 3 WHERE id = $1", job_id)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, None, WORKER, claim) == "failed"
    job = await fetch(client, tenant, job_id)
    assert job["status"] == "failed"
    assert "interrupted 3 times" in job["reason"]


async def test_the_worker_dispatches_budget_jobs_to_the_runner(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
) -> None:
    job_id = await queue_job(client, tenant)
    claimed = await claim_job(owner_pool, tenant.tenant_id, job_id)
    worker = Worker(app_pool, None, name=WORKER)
    claim = WorkerClaim("budget_optimization", job_id, tenant.tenant_id, False, claimed.lease_token)
    assert await worker.process(claim) == "succeeded"


# ---------------------------------------------------------------------------------------------
# With a model (OpenAI mocked at the HTTP layer)
# ---------------------------------------------------------------------------------------------


def openai_completion(content: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A chat completion body as OpenAI sends it."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:8]}",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


@pytest.fixture
def gateway(
    test_settings: Settings, app_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> LlmGateway:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = test_settings.model_copy(update={"llm_model": "openai/gpt-4o-mini"})
    return LlmGateway(settings, app_pool, build_price_book(settings))


MODEL_ANSWER = {
    "rationale": "Google Search earns the most net revenue per attributed dollar, so it gets "
    "the largest share; email holds its place; put all of it into email.",
    "risks": ["Chargebacks on Google Search were a third of its ledger revenue."],
}


@respx.mock
async def test_the_model_writes_the_rationale_and_the_cost_is_its_calls(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    gateway: LlmGateway,
) -> None:
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(
        200, json=openai_completion(json.dumps(MODEL_ANSWER), 300, 87)))  # fmt: skip
    await seed(owner_pool, tenant.tenant_id)
    job_id = await queue_job(client, tenant)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, gateway, WORKER, claim) == "succeeded"

    assert route.call_count == 1
    sent = json.loads(route.calls[0].request.content)
    assert "Do NOT change" in sent["messages"][0]["content"]
    assert '"proposed_usd": "2000.00"' in sent["messages"][1]["content"]
    assert sent["max_tokens"] <= 900

    job = await fetch(client, tenant, job_id)
    assert job["status"] == "succeeded"
    assert job["degraded"] is False
    assert job["reason"] is None
    assert job["rationale"] == MODEL_ANSWER["rationale"]
    assert job["risks"] == MODEL_ANSWER["risks"]
    # The model's words do not move the numbers.
    proposed = {code: c["proposed_usd"] for code, c in _by_channel(job).items()}
    assert proposed == {"google_search_paid": "2000.00", "facebook_paid": "1000.00",
                        "email": "600.00"}  # fmt: skip
    # 300 input tokens at $0.15/M and 87 output at $0.60/M = $0.0000972 = 0.00972 cents.
    spent = await job_calls_cost(app_pool, tenant.tenant_id, job_id)
    assert spent == Decimal("0.00972")
    assert Decimal(job["cost_usd"]) * 100 == spent
    assert [c["status"] for c in job["llm_calls"]] == ["succeeded"]
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT c.endpoint, j.cost_cents AS job_cents, c.cost_cents AS call_cents "
            "FROM budget_optimization_jobs j JOIN llm_api_calls c "
            "ON c.budget_optimization_job_id = j.id WHERE j.id = $1", job_id)  # fmt: skip
    assert row["endpoint"] == "budget_optimizations"
    assert row["job_cents"] == row["call_cents"] == spent


@respx.mock
async def test_invalid_model_output_falls_back_to_the_template(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    gateway: LlmGateway,
) -> None:
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(
        200, json=openai_completion("I would rather not.", 900, 5)))  # fmt: skip
    await seed(owner_pool, tenant.tenant_id)
    job_id = await queue_job(client, tenant)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, gateway, WORKER, claim) == "succeeded"
    assert route.call_count == 2  # one repair attempt
    job = await fetch(client, tenant, job_id)
    assert job["degraded"] is True
    assert "templated" in job["reason"]
    assert job["rationale"].startswith("For 2025-03-01 to 2025-04-01")
    spent = await job_calls_cost(app_pool, tenant.tenant_id, job_id)
    assert spent > 0
    assert Decimal(job["cost_usd"]) * 100 == spent
    async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
        quarantined = await conn.fetchval(
            "SELECT count(*) FROM llm_validation_failures WHERE endpoint = 'budget_optimizations'"
        )
    assert quarantined == 2


@respx.mock
async def test_takeover_counts_earlier_spend_against_the_ceiling(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    gateway: LlmGateway,
) -> None:
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(
        200, json=openai_completion(json.dumps(MODEL_ANSWER), 300, 50)))  # fmt: skip
    job_id = await queue_job(client, tenant)

    async def earlier_call(usd: str) -> None:
        # A dead worker's calls, under its lease (its token presented, migration 010).
        token = await lease_run(
            owner_pool, tenant.tenant_id, job_id, table="budget_optimization_jobs"
        )
        with presenting_run_token(token):
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                call = await reserve_call(
                    conn, tenant_id=tenant.tenant_id, endpoint="budget_optimizations",
                    model="gpt-4o-mini", provider="openai", worst_case_usd=Decimal(usd),
                    lease_seconds=60, budget_optimization_job_id=job_id,
                )  # fmt: skip
                await settle_call(conn, call, status="succeeded", cost_usd=Decimal(usd))

    # A dead worker's attempt spent 0.10: the rerun may spend at most 0.20 more.
    await earlier_call("0.10")
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    claim = dataclasses.replace(claim, takeover=True)
    assert await run_budget_optimization(app_pool, gateway, WORKER, claim) == "succeeded"
    assert route.call_count == 1
    job = await fetch(client, tenant, job_id)
    assert Decimal(job["cost_usd"]) * 100 == await job_calls_cost(
        app_pool, tenant.tenant_id, job_id)  # fmt: skip
    assert Decimal(job["cost_usd"]) > Decimal("0.10")

    # Earlier attempts spent the whole ceiling: no call, the rationale is templated. (The
    # database itself refuses a reservation past the job's ceiling: this fills it exactly.)
    await earlier_call(str(Decimal("0.30") - Decimal(job["cost_usd"])))
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    claim = dataclasses.replace(claim, takeover=True)
    assert await run_budget_optimization(app_pool, gateway, WORKER, claim) == "budget_exhausted"
    assert route.call_count == 1
    job = await fetch(client, tenant, job_id)
    assert job["status"] == "budget_exhausted"
    assert job["degraded"] is True
    assert "ceiling" in job["reason"]
    assert job["rationale"].startswith("For 2025-03-01")
    assert job["cost_usd"] == "0.3"


@respx.mock
async def test_a_spent_monthly_cap_means_a_templated_rationale_at_no_cost(
    client: httpx.AsyncClient,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    gateway: LlmGateway,
) -> None:
    route = respx.post(OPENAI_URL).mock(return_value=httpx.Response(
        200, json=openai_completion(json.dumps(MODEL_ANSWER), 10, 10)))  # fmt: skip
    capped = await create_tenant(owner_pool, f"capped-{uuid.uuid4().hex[:8]}",
                                 monthly_cap_cents=Decimal(0))  # fmt: skip
    await seed(owner_pool, capped.tenant_id)
    job_id = await queue_job(client, capped)
    claim = await claim_job(owner_pool, capped.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, gateway, WORKER, claim) == "succeeded"
    assert route.call_count == 0
    job = await fetch(client, capped, job_id)
    assert job["degraded"] is True
    assert "monthly LLM cap" in job["reason"]
    assert job["cost_usd"] == "0"
    assert _by_channel(job)["google_search_paid"]["proposed_usd"] == "2000.00"


def stalled(seconds: float) -> Stalled:
    """A provider that answers the model's recommendation only after `seconds`."""
    answer = openai_completion(json.dumps(MODEL_ANSWER), 10, 10)
    return Stalled(seconds, lambda: httpx.Response(200, json=answer))


@respx.mock
async def test_a_job_out_of_time_keeps_its_figures_and_its_spend(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    gateway: LlmGateway,
) -> None:
    provider = stalled(30)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    gateway.settings = gateway.settings.model_copy(update={"investigation_timeout_s": 1.5})
    await seed(owner_pool, tenant.tenant_id)
    job_id = await queue_job(client, tenant)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)
    assert await run_budget_optimization(app_pool, gateway, WORKER, claim) == "timed_out"
    assert (provider.cut_off, provider.answered) == (1, 0)  # the 1.5 s limit cut the call off
    job = await fetch(client, tenant, job_id)
    assert job["status"] == "timed_out"
    assert job["degraded"] is True
    assert _by_channel(job)["google_search_paid"]["proposed_usd"] == "2000.00"
    assert job["rationale"].startswith("For 2025-03-01")
    # The cut-off call may have been billed: it counts at its worst case, and so does the job.
    assert [c["status"] for c in job["llm_calls"]] == ["timed_out"]
    assert job["llm_calls"][0]["cost_is_estimate"] is True
    assert Decimal(job["cost_usd"]) * 100 == await job_calls_cost(
        app_pool, tenant.tenant_id, job_id)  # fmt: skip


@respx.mock
async def test_a_lost_lease_stops_the_job_without_recording_over_the_new_holder(
    client: httpx.AsyncClient,
    tenant: CreatedTenant,
    owner_pool: asyncpg.Pool,
    app_pool: asyncpg.Pool,
    gateway: LlmGateway,
) -> None:
    provider = stalled(30)
    respx.post(OPENAI_URL).mock(side_effect=provider)
    job_id = await queue_job(client, tenant)
    claim = await claim_job(owner_pool, tenant.tenant_id, job_id)

    async def steal() -> None:
        await asyncio.wait_for(provider.arrived.wait(), 60)  # while its model call is in flight
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE budget_optimization_jobs SET lease_owner = 'thief', "
                "lease_expires_at = now() + interval '1 hour' WHERE id = $1", job_id)  # fmt: skip

    thief = asyncio.create_task(steal())
    try:
        outcome = await asyncio.wait_for(
            run_budget_optimization(app_pool, gateway, WORKER, claim), 10)  # fmt: skip
        await thief
        assert outcome == "lost"
        job = await fetch(client, tenant, job_id)
        assert job["status"] == "running"
        assert job["recommendations"] is None
        assert [c["status"] for c in job["llm_calls"]] in (["cancelled"], ["pending"])
        assert (provider.cut_off, provider.answered) == (1, 0)

        async def settled() -> bool:  # the cancelled call is settled in a shielded task
            async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                pending = await conn.fetchval(
                    "SELECT count(*) FROM llm_api_calls WHERE status = 'pending'"
                )
            return bool(pending == 0)

        await wait_until(settled, "the cancelled call is settled, none left pending")
    finally:
        async with tenant_transaction(owner_pool, tenant.tenant_id) as conn:
            await conn.execute(
                "UPDATE budget_optimization_jobs SET status = 'cancelled', lease_owner = NULL, "
                "lease_expires_at = NULL, finished_at = now() WHERE id = $1", job_id)  # fmt: skip
