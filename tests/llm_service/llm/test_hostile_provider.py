"""A provider that lies: whatever it says about usage, money stays exact, bounded and settled.

Reproductions of issue 10 (items 2, 3 and 5) first, then every lie of the catalogue through the
gateway, then the sweeper. The property tests over whole investigations are in
tests/llm_service/investigations/test_hostile_runs.py.
"""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import respx
from hostile_provider import BODY_LIES, CATALOGUE, OPENAI_URL, USAGE_LIES

from budgets.ceiling import RunCeiling
from budgets.money import usd_to_cents
from llm_service.costs.ledger_repository import reserve_call
from llm_service.db.pool import tenant_transaction
from llm_service.llm.gateway import LlmGateway, LlmRequest
from llm_service.llm.pricing import build_price_book
from llm_service.metrics import REGISTRY
from llm_service.settings import Settings
from llm_service.tenants.service import CreatedTenant
from llm_service.workers.sweeper import ReservationSweeper, sweep_once

CEILING = Decimal("0.01")
NORMALISED_BY_LITELLM = frozenset({"booleans", "missing_output"})


@pytest.fixture
def hostile_settings(test_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return test_settings.model_copy(
        update={"llm_model": "openai/gpt-4o-mini", "llm_max_attempts": 1}
    )


@pytest.fixture
def gateway(hostile_settings: Settings, app_pool: asyncpg.Pool) -> LlmGateway:
    return LlmGateway(hostile_settings, app_pool, build_price_book(hostile_settings))


def _request(tenant: CreatedTenant, max_tokens: int = 700) -> LlmRequest:
    return LlmRequest(
        tenant_id=tenant.tenant_id,
        endpoint="explanations",
        messages=[{"role": "user", "content": "Why did paid social revenue drop last week?"}],
        max_tokens=max_tokens,
    )


async def _rows(pool: asyncpg.Pool, tenant_id: UUID) -> list[asyncpg.Record]:
    async with tenant_transaction(pool, tenant_id) as conn:
        return list(await conn.fetch("SELECT * FROM llm_api_calls ORDER BY created_at"))


async def _assert_money_holds(pool: asyncpg.Pool, tenant_id: UUID) -> None:
    """Nothing pending, no row above its reservation, the month within its cap and reconciled."""
    async with tenant_transaction(pool, tenant_id) as conn:
        pending = await conn.fetchval("SELECT count(*) FROM llm_api_calls WHERE status = 'pending'")
        over = await conn.fetchval(
            "SELECT count(*) FROM llm_api_calls WHERE cost_cents > reserved_cents"
        )
        month = await conn.fetchrow(
            "SELECT coalesce(sum(m.total_cost_cents), 0) AS total, "
            "(SELECT monthly_cap_cents FROM tenants WHERE id = $1) AS cap FROM llm_monthly_costs m",
            tenant_id,
        )
        settled = await conn.fetchval(
            "SELECT coalesce(sum(cost_cents), 0) FROM llm_api_calls WHERE status <> 'pending'"
        )
        drift = await conn.fetch(
            "SELECT * FROM fn_reconcile_monthly_costs() WHERE tenant_id = $1 AND "
            "(recorded_cost_cents <> computed_cost_cents OR NOT breakdowns_match)",
            tenant_id,
        )
    assert pending == 0
    assert over == 0
    assert month["total"] <= month["cap"]
    assert month["total"] == settled
    assert drift == []


def _metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return value or 0.0


# -- the reproductions ------------------------------------------------------------------------


@respx.mock
async def test_a_billion_output_tokens_on_a_700_token_call_is_billed_at_its_reservation(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    respx.post(OPENAI_URL).mock(side_effect=CATALOGUE["usage:output_a_billion"])
    ceiling = RunCeiling(CEILING)
    before = _metric(
        "llm_service_llm_usage_anomalies_total", model="openai/gpt-4o-mini", endpoint="explanations"
    )

    result = await gateway.complete(_request(tenant), ceiling=ceiling)

    [row] = await _rows(app_pool, tenant.tenant_id)
    assert row["max_tokens"] <= 700
    assert row["status"] == "succeeded"
    assert row["cost_cents"] == row["reserved_cents"] <= usd_to_cents(CEILING)
    assert row["cost_is_estimate"] is True
    assert "above the" in row["usage_anomaly"] and "granted" in row["usage_anomaly"]
    assert row["raw_usage"]["completion_tokens"] == 1_000_000_000
    assert (row["input_tokens"], row["output_tokens"]) == (None, None)
    # The run's view and the ledger agree, and neither passes the ceiling.
    assert result.cost_usd == ceiling.spent <= CEILING
    assert usd_to_cents(result.cost_usd) == row["cost_cents"]
    assert (
        _metric(
            "llm_service_llm_usage_anomalies_total",
            model="openai/gpt-4o-mini",
            endpoint="explanations",
        )
        == before + 1
    )
    await _assert_money_holds(app_pool, tenant.tenant_id)


@respx.mock
async def test_a_hundred_times_max_tokens_on_every_call_stays_under_the_ceiling(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    respx.post(OPENAI_URL).mock(side_effect=CATALOGUE["usage:output_100x_max_tokens"])
    ceiling = RunCeiling(Decimal("0.003"))
    calls = 0
    from budgets.ceiling import CeilingReached

    with pytest.raises(CeilingReached):
        for _ in range(50):
            await gateway.complete(_request(tenant, max_tokens=2000), ceiling=ceiling)
            calls += 1
    assert calls >= 1
    assert ceiling.spent <= Decimal("0.003")
    rows = await _rows(app_pool, tenant.tenant_id)
    assert sum(r["cost_cents"] for r in rows) == usd_to_cents(ceiling.spent)
    assert all(r["usage_anomaly"] for r in rows)
    await _assert_money_holds(app_pool, tenant.tenant_id)


@respx.mock
@pytest.mark.parametrize("lie", sorted(USAGE_LIES))
async def test_every_usage_lie_settles_within_the_reservation(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant, lie: str
) -> None:
    respx.post(OPENAI_URL).mock(side_effect=CATALOGUE[f"usage:{lie}"])
    ceiling = RunCeiling(CEILING)
    try:
        await gateway.complete(_request(tenant), ceiling=ceiling)
    except Exception as exc:  # litellm may refuse to parse some lies: still settled below
        assert type(exc).__name__ in {"ProviderUnavailable", "APIError", "InternalServerError"}
    [row] = await _rows(app_pool, tenant.tenant_id)
    assert row["status"] in {"succeeded", "failed"}
    if lie in NORMALISED_BY_LITELLM:
        # litellm turns these into plausible integers before we see them (True -> 1, a missing
        # field -> 0): billed as those, which the bounds still hold.
        assert row["usage_anomaly"] is None
        assert row["output_tokens"] <= row["max_tokens"]
        assert row["cost_cents"] <= row["reserved_cents"]
    else:
        # Impossible usage is not believed: billed at the reservation, flagged.
        assert row["cost_cents"] == row["reserved_cents"]
        assert row["cost_is_estimate"] is True
        if row["status"] == "succeeded":
            assert row["usage_anomaly"]
    assert ceiling.spent <= CEILING and ceiling.outstanding == 0
    await _assert_money_holds(app_pool, tenant.tenant_id)


@respx.mock
@pytest.mark.parametrize("lie", sorted(BODY_LIES))
async def test_every_body_lie_settles_within_the_reservation(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant, lie: str
) -> None:
    respx.post(OPENAI_URL).mock(side_effect=CATALOGUE[f"body:{lie}"])
    ceiling = RunCeiling(CEILING)
    try:
        await gateway.complete(_request(tenant), ceiling=ceiling)
    except Exception as exc:
        assert "Traceback" not in str(exc)
    rows = await _rows(app_pool, tenant.tenant_id)
    assert len(rows) == 1
    assert ceiling.spent <= CEILING and ceiling.outstanding == 0
    await _assert_money_holds(app_pool, tenant.tenant_id)


@respx.mock
async def test_plausible_usage_is_billed_as_reported(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    respx.post(OPENAI_URL).mock(side_effect=CATALOGUE["honest_final"])
    result = await gateway.complete(_request(tenant))
    [row] = await _rows(app_pool, tenant.tenant_id)
    assert (row["input_tokens"], row["output_tokens"]) == (8, 5)
    assert row["usage_anomaly"] is None and row["cost_is_estimate"] is False
    price = gateway.price()
    expected = Decimal(8) * price.input_per_token + Decimal(5) * price.output_per_token
    assert result.cost_usd == expected
    assert row["cost_cents"] == usd_to_cents(expected) < row["reserved_cents"]
    assert row["raw_usage"]["prompt_tokens"] == 8


# -- a call that was never sent costs nothing ---------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_connection_is_not_charged(
    hostile_settings: Settings, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    # A real closed port on loopback: the connection is refused, nothing can have been sent.
    settings = hostile_settings.model_copy(
        update={"llm_api_base": f"http://127.0.0.1:{_closed_port()}/v1", "llm_max_attempts": 3}
    )
    gateway = LlmGateway(settings, app_pool, build_price_book(settings))
    ceiling = RunCeiling(CEILING)
    with pytest.raises(Exception) as raised:
        await gateway.complete(_request(tenant), ceiling=ceiling)
    assert type(raised.value).__name__ == "ProviderUnavailable"
    rows = await _rows(app_pool, tenant.tenant_id)
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "failed"
        assert row["cost_cents"] == 0 and row["cost_is_estimate"] is False
    assert ceiling.spent == 0
    await _assert_money_holds(app_pool, tenant.tenant_id)


@respx.mock
async def test_a_read_timeout_after_sending_keeps_the_estimate(
    gateway: LlmGateway, app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    respx.post(OPENAI_URL).mock(side_effect=httpx.ReadTimeout("no answer"))
    with pytest.raises(Exception):  # noqa: B017 - any failure; the ledger is what is checked
        await gateway.complete(_request(tenant), ceiling=RunCeiling(CEILING))
    [row] = await _rows(app_pool, tenant.tenant_id)
    assert row["cost_cents"] == row["reserved_cents"] > 0 and row["cost_is_estimate"] is True


# -- the sweeper --------------------------------------------------------------------------------


async def _expired_reservation(pool: asyncpg.Pool, tenant_id: UUID) -> UUID:
    """A reservation whose caller died: made with no lease left, never settled."""
    async with tenant_transaction(pool, tenant_id) as conn:
        call = await reserve_call(
            conn,
            tenant_id=tenant_id,
            endpoint="explanations",
            model="gpt-4o-mini",
            provider="openai",
            worst_case_usd=Decimal("0.001"),
            lease_seconds=-1,
        )
    return call.call_id


async def test_one_sweep_settles_expired_reservations_at_their_worst_case(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    call_id = await _expired_reservation(app_pool, tenant.tenant_id)
    assert await sweep_once(app_pool) >= 1
    [row] = [r for r in await _rows(app_pool, tenant.tenant_id) if r["id"] == call_id]
    assert row["status"] == "abandoned"
    assert row["cost_cents"] == row["reserved_cents"] == Decimal("0.1")
    assert row["cost_is_estimate"] is True
    await _assert_money_holds(app_pool, tenant.tenant_id)


async def test_a_row_held_by_another_transaction_does_not_stop_the_sweep(
    app_pool: asyncpg.Pool,
    owner_pool: asyncpg.Pool,
    tenant: CreatedTenant,
    other_tenant: CreatedTenant,
) -> None:
    held = await _expired_reservation(app_pool, tenant.tenant_id)
    victim = await _expired_reservation(app_pool, other_tenant.tenant_id)
    # Held by the owner: llm_app may lock no ledger row since migration 012 (a settle in flight,
    # as the definer, is what holds one).
    async with owner_pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM llm_api_calls WHERE id = $1 FOR UPDATE", held)
        assert await sweep_once(app_pool) >= 1
        async with tenant_transaction(app_pool, other_tenant.tenant_id) as conn:
            assert (
                await conn.fetchval("SELECT status FROM llm_api_calls WHERE id = $1", victim)
                == "abandoned"
            )
    assert await sweep_once(app_pool) >= 1  # the held row, once released
    await _assert_money_holds(app_pool, tenant.tenant_id)


async def test_the_running_sweeper_settles_a_dead_callers_reservation(
    app_pool: asyncpg.Pool, tenant: CreatedTenant
) -> None:
    import asyncio

    sweeper = ReservationSweeper(app_pool, interval_s=0.05)
    task = asyncio.create_task(sweeper.run_until_stopped())
    try:
        call_id = await _expired_reservation(app_pool, tenant.tenant_id)
        status: Any = "pending"
        async with asyncio.timeout(30):  # a bound, not a synchronisation: the loop polls the row
            while status == "pending":
                async with tenant_transaction(app_pool, tenant.tenant_id) as conn:
                    status = await conn.fetchval(
                        "SELECT status FROM llm_api_calls WHERE id = $1", call_id
                    )
                await asyncio.sleep(0)
    finally:
        sweeper.stop()
        await task
    assert status == "abandoned"
